"""``check-shards``: read back every shard of a build and report what is wrong.

Per split, in parallel over shards: the shards against ``sizes.json`` and the manifest's counts,
every sample's members (the JPEG and the ten TreeOfLife-10M texts), a JPEG that decodes at the
stated size, texts consistent with each other (each ``*.txt`` is its template around the same
names, the taxonTag's ranks are the taxonomic name), and no key in two shards.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from biocap_core.errors import BioCAPError, TaxonParseError
from biocap_core.shard_builder.catalog import key64
from biocap_core.shards import iter_samples, read_sizes
from biocap_core.taxonomy import TOL_TEXT_TYPES, parse_taxon_tag

#: The members every TreeOfLife-10M sample has (``caption.txt`` is optional).
MEMBERS = (
    "jpg",
    *(f"{t}.txt" for t in TOL_TEXT_TYPES),
    "scientific_name.txt",
    "taxonomic_name.txt",
    "common_name.txt",
)
#: Problems listed per shard before the rest are only counted.
SHOW = 5


@dataclass
class CheckReport:
    samples: dict[str, int] = field(default_factory=dict)  #: per split
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def split_dirs(root: Path) -> list[Path]:
    """The split folders of a build (or ``root`` itself when it holds shards)."""
    if list(root.glob("shard-*.tar")):
        return [root]
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and list(p.glob("shard-*.tar"))
    )


def check(root: Path, workers: int = 1, progress: bool = True) -> CheckReport:
    report = CheckReport()
    if not root.is_dir():
        report.problems.append(f"{root}: no such folder")
        return report
    dirs = split_dirs(root)
    if not dirs:
        report.problems.append(f"{root}: no shard-*.tar in it or in a split folder under it")
    manifest_path = (
        root / "manifest.json"
        if (root / "manifest.json").is_file()
        else root.parent / "manifest.json"
    )
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    size = None
    if manifest and manifest["image_policy"]["resize"] != "keep":
        size = manifest["image_policy"]["size"]
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, workers)) as pool:
        for split_dir in dirs:
            _check_split(split_dir, manifest, size, pool, report, progress)
    return report


def _check_split(
    split_dir: Path,
    manifest: dict | None,
    size: int | None,
    pool,
    report: CheckReport,
    progress: bool,
) -> None:
    shards = sorted(split_dir.glob("shard-*.tar"))
    where = split_dir.name
    try:
        sizes = read_sizes(split_dir)
    except (FileNotFoundError, BioCAPError) as exc:
        report.problems.append(str(exc))
        sizes = {}
    names = {s.name for s in shards}
    if sizes and set(sizes) != names:
        report.problems.append(
            f"{where}/sizes.json lists {sorted(set(sizes) - names)[:5]} (no such shard) "
            f"and lacks {sorted(names - set(sizes))[:5]}"
        )
    keys, total = [], 0
    bar = tqdm(
        total=sum(sizes.values()) or None,
        desc=f"checking {where}",
        unit="img",
        disable=not progress,
    )
    for name, count, hashes, problems in pool.imap(_check_shard, [(s, size) for s in shards]):
        bar.update(count)
        total += count
        keys.append(hashes)
        report.problems += problems
        if name in sizes and sizes[name] != count:
            report.problems.append(
                f"{where}/{name}: {count} samples, sizes.json says {sizes[name]}"
            )
    bar.close()
    report.samples[where] = total
    if (
        manifest
        and where in manifest.get("splits", {})
        and manifest["splits"][where]["written"] != total
    ):
        report.problems.append(
            f"{where}: {total} samples, the manifest says {manifest['splits'][where]['written']}"
        )
    hashes = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    unique, counts = np.unique(hashes, return_counts=True)
    if (counts > 1).any():
        report.problems += _duplicates(shards, set(unique[counts > 1].tolist()))


def _duplicates(shards: list[Path], hashes: set[int]) -> list[str]:
    """Name the keys behind duplicate hashes (a second read, only when there are some)."""
    seen: dict[str, list[str]] = {}
    for shard in shards:
        for sample in iter_samples(str(shard)):
            if int(key64([sample["__key__"]])[0]) in hashes:
                seen.setdefault(sample["__key__"], []).append(shard.name)
    return [
        f"key {k} is in more than one sample: {', '.join(v)}" for k, v in seen.items() if len(v) > 1
    ]


def _check_shard(args: tuple[Path, int | None]) -> tuple[str, int, np.ndarray, list[str]]:
    shard, size = args
    keys, problems, kinds = [], [], Counter()
    try:
        for sample in iter_samples(str(shard), keep_case=True):
            keys.append(sample["__key__"])
            problem = _sample_problem(sample, size)
            if problem:
                kinds[problem.split(":")[0]] += 1
                if len(problems) < SHOW:
                    problems.append(
                        f"{shard.parent.name}/{shard.name} {sample['__key__']}: {problem}"
                    )
    except BioCAPError as exc:
        problems.append(str(exc))
    hidden = sum(kinds.values()) - len(problems)
    if hidden > 0:
        problems.append(f"{shard.parent.name}/{shard.name}: {hidden} more problem sample(s)")
    return shard.name, len(keys), key64(keys), problems


def _sample_problem(sample: dict, size: int | None) -> str | None:
    missing = [m for m in MEMBERS if m not in sample]
    if missing:
        return f"missing members: {missing}"
    try:
        image = Image.open(io.BytesIO(sample["jpg"]))
        if image.format != "JPEG":
            return f"jpg: a {image.format} image, not a JPEG"
        image.load()
    except Exception as exc:  # PIL raises many types for undecodable data
        return f"jpg: does not decode ({exc})"
    if size is not None and image.size != (size, size):
        return f"jpg: {image.size[0]}x{image.size[1]}, expected {size}x{size}"
    return _text_problem({k: v.decode() for k, v in sample.items() if k.endswith(".txt")})


def _text_problem(texts: dict[str, str]) -> str | None:
    sci, tax, com = (
        texts["scientific_name.txt"],
        texts["taxonomic_name.txt"],
        texts["common_name.txt"],
    )
    tag = texts["taxonTag.txt"].removeprefix("a photo of ").removesuffix(".")
    expected = {
        "sci.txt": f"a photo of {sci}.",
        "com.txt": f"a photo of {com}.",
        "taxon.txt": f"a photo of {tax}.",
        "sci_com.txt": f"a photo of {sci} with common name {com}.",
        "taxon_com.txt": f"a photo of {tax} with common name {com}.",
        "taxonTag_com.txt": f"a photo of {tag} with common name {com}.",
    }
    wrong = [name for name, text in expected.items() if texts[name] != text]
    if wrong:
        return f"texts: {wrong[0]} is {texts[wrong[0]]!r}, expected {expected[wrong[0]]!r}"
    try:
        ranks = " ".join(r for r in parse_taxon_tag(texts["taxonTag.txt"]).ranks() if r)
    except TaxonParseError as exc:
        return f"texts: {exc}"
    if ranks != tax:
        return f"texts: the taxonTag's ranks {ranks!r} are not the taxonomic name {tax!r}"
    return None
