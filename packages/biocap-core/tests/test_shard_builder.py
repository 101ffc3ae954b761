"""The shard builder end to end on a toy download in the real layout (broken files included): every
readable row once, the broken ones listed, the same bytes whatever the workers, jobs or a kill."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from biocap_core.cli import app
from biocap_core.errors import SchemaError
from biocap_core.shard_builder import (
    BadImage,
    BuildMismatch,
    BuildOptions,
    ImagePolicy,
    Inputs,
    build,
    check,
)
from biocap_core.shard_builder.plan import make_plan
from biocap_core.shards import iter_samples, read_sizes
from biocap_core.toy import ToyConfig, write_download
from biocap_core.toy.download import READABLE_DEFECTS
from PIL import Image
from typer.testing import CliRunner

SIZE = 32
#: Small shards, so a few dozen rows make several and each job and worker gets some.
SHARD_SIZE = 6
#: The toy_dir fixture's species, so texts can be compared with its shards.
SPECIES = 12


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("download")
    made = write_download(
        out, ToyConfig(species=SPECIES, images_per_species=3, val_per_species=1, image_size=40)
    )
    return out, made


def tol_inputs(root: Path, **kw) -> Inputs:
    return Inputs(
        catalog=root / "metadata" / "catalog.csv",
        eol=root / "dataset" / "eol",
        inat21=root / "dataset" / "inat21" / "train",
        bioscan=root / "dataset" / "bioscan",
        **kw,
    )


def cli_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "shards",
        "--catalog",
        str(root / "metadata" / "catalog.csv"),
        "--eol",
        str(root / "dataset" / "eol"),
        "--inat21",
        str(root / "dataset" / "inat21" / "train"),
        "--bioscan",
        str(root / "dataset" / "bioscan"),
        "--captions",
        str(root / "captions" / "uuid_caption_description.parquet"),
        "--out",
        str(out),
        "--image-size",
        str(SIZE),
        "--shard-size",
        str(SHARD_SIZE),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def built(download, tmp_path_factory) -> Path:
    """The download built with one worker, through the CLI."""
    root, _ = download
    out = tmp_path_factory.mktemp("built")
    result = CliRunner().invoke(app, cli_args(root, out, "--workers", "1"))
    assert result.exit_code == 0, result.output
    return out


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file but the work folder (errors.parquet as its rows)."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_file() and rel.parts[0] != ".build":
            data = path.read_bytes()
            if path.suffix == ".parquet":
                data = pl.read_parquet(path).write_csv().encode()
            files[str(rel)] = data
    return files


def test_every_readable_row_once_and_the_broken_ones_in_the_errors_table(download, built):
    root, made = download
    catalog = pl.read_csv(root / "metadata" / "catalog.csv", infer_schema=False)
    broken = {u for u, d in made["defects"].items() if d not in READABLE_DEFECTS}
    for split in ("train", "val"):
        keys = [
            s["__key__"]
            for s in iter_samples(sorted(str(p) for p in (built / split).glob("*.tar")))
        ]
        rows = set(catalog.filter(pl.col("split") == split)["treeoflife_id"])
        assert len(keys) == len(set(keys)) and set(keys) == rows - broken
        assert sum(read_sizes(built / split).values()) == len(keys)
    assert not (built / "train_small").exists()  # a subset of train: built only when asked for
    errors = pl.read_parquet(built / "errors.parquet")
    assert set(errors["uuid"]) == broken and errors["split"].unique().to_list() == ["train"]
    reason = {u: r.split(":")[0] for u, r in errors.select("uuid", "reason").iter_rows()}
    expected = {
        "corrupt": "corrupt",
        "truncated": "truncated",
        "bomb": "decompression bomb",
        "empty": "empty file",
        "no_taxon": "no taxon text",
        "no_source": "no image source in the catalog",
    }
    for uuid, defect in made["defects"].items():
        if defect == "missing":
            assert reason[uuid] in ("missing file", "not in any EOL image_set tar")
        elif defect in expected:
            assert reason[uuid] == expected[defect], defect
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["splits"]["train"]["errors"] == len(broken) and manifest["errors"] == len(
        broken
    )
    assert manifest["eol_sets"][0]["unmatched"] == 2  # an image no row names, and a README
    assert manifest["image_policy"] == ImagePolicy(size=SIZE).describe()
    assert not (built / ".build" / "staging").exists()
    readable = {u for u, d in made["defects"].items() if d in READABLE_DEFECTS}
    for sample in iter_samples(sorted(str(p) for p in (built / "train").glob("*.tar"))):
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
        readable.discard(sample["__key__"])
    assert not readable  # RGBA, palette, CMYK, grayscale and 1600 px images all made it


def test_check_shards_passes_a_build_and_names_what_is_wrong(built, tmp_path):
    result = CliRunner().invoke(
        app, ["check-shards", str(built), "--workers", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "every shard checks out" in result.output
    broken = tmp_path / "broken" / "train"
    broken.mkdir(parents=True)
    for shard in (built / "train").glob("*.tar"):
        (broken / shard.name).write_bytes(shard.read_bytes())
    (broken / "shard-000099.tar").write_bytes((built / "train" / "shard-000000.tar").read_bytes())
    count = read_sizes(built / "train")["shard-000000.tar"]
    (broken / "sizes.json").write_text(
        json.dumps(read_sizes(built / "train") | {"shard-000099.tar": count + 1})
    )
    report = check(broken.parent, progress=False)
    text = "\n".join(report.problems)
    assert (
        not report.ok and f"shard-000099.tar: {count} samples, sizes.json says {count + 1}" in text
    )
    assert "is in more than one sample: shard-000000.tar, shard-000099.tar" in text


def test_one_worker_three_workers_and_two_jobs_write_the_same_files(
    download, built, tmp_path, child_env
):
    root, _ = download
    three = tmp_path / "three"
    result = CliRunner().invoke(app, cli_args(root, three, "--workers", "3"))
    assert result.exit_code == 0, result.output
    expected = outputs(built)
    assert outputs(three) == expected
    again = CliRunner().invoke(app, cli_args(root, three, "--workers", "3", "--strict"))
    assert again.exit_code == 1 and "could not be written (--strict)" in again.output  # finished
    assert outputs(three) == expected
    jobs = tmp_path / "jobs"  # two jobs at once, sharing --out, as a SLURM array does
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "biocap_core", *cli_args(root, jobs)],
            env={**child_env, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stdout.read()
    assert outputs(jobs) == expected


def _workers(pid: int) -> list[int]:
    """The build's worker processes (spawned children running multiprocessing's spawn_main)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _start_and_wait_for_a_shard(command, env, reports: Path, before: int) -> subprocess.Popen:
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if reports.is_dir() and len(list(reports.iterdir())) > before and _workers(run.pid):
            break
        time.sleep(0.02)
    return run


def test_killed_builds_rerun_to_what_an_uninterrupted_one_writes(
    download, built, tmp_path, child_env
):
    root, _ = download
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "biocap_core", *cli_args(root, out, "--workers", "1")]
    reports = out / ".build" / "reports" / "train"
    # a worker dies (the OOM killer, say): the build stops with a message instead of waiting forever
    run = _start_and_wait_for_a_shard(command, child_env, reports, 0)
    os.kill(_workers(run.pid)[0], signal.SIGKILL)
    assert run.wait(timeout=60) == 1 and "a worker process died" in run.stdout.read()
    # the whole build is killed, mid-shard
    run = _start_and_wait_for_a_shard(command, child_env, reports, len(list(reports.iterdir())))
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    total = sum(len(read_sizes(built / s)) for s in ("train", "val"))
    assert len(list(out.rglob("shard-*.tar"))) < total and not (out / "manifest.json").exists()
    subprocess.run(command, env=child_env, check=True, capture_output=True)
    assert outputs(out) == outputs(built)


def test_texts_are_the_toy_shards_texts_and_captions_land_on_their_samples(
    download, built, toy_dir
):
    root, _ = download
    toy = {}
    for sample in iter_samples(sorted(str(p) for p in (toy_dir / "train").glob("*.tar"))):
        toy[sample["taxonomic_name.txt"]] = sample
    captions = dict(
        pl.read_parquet(root / "captions" / "uuid_caption_description.parquet")
        .select("uuid", "caption")
        .iter_rows()
    )
    members = [m for m in toy[next(iter(toy))] if m.endswith(".txt") and m != "caption.txt"]
    assert len(members) == 10
    samples = list(iter_samples(sorted(str(p) for p in (built / "train").glob("*.tar"))))
    for sample in samples:
        twin = toy[sample["taxonomic_name.txt"]]
        assert {m: sample[m] for m in members} == {m: twin[m] for m in members}
        assert sample["caption.txt"].decode() == captions[sample["__key__"]]
    assert (
        len({s["taxonomic_name.txt"] for s in samples}) >= SPECIES - 2
    )  # the defects are in the first rows


def test_shards_mix_species_and_sources_in_a_seeded_order(download, tmp_path):
    root, _ = download
    plans = {}
    for seed in (0, 1):
        make_plan(tol_inputs(root), None, seed, SHARD_SIZE, tmp_path / str(seed))
        plans[seed] = pl.read_parquet(tmp_path / str(seed) / "plan" / "train.parquet")
    first = plans[0].filter(pl.col("shard") == 0)
    assert first["source"].n_unique() >= 2 and first["genus"].n_unique() >= 2
    assert plans[0]["uuid"].to_list() != plans[1]["uuid"].to_list()
    assert sorted(plans[0]["uuid"]) == sorted(plans[1]["uuid"])


def test_exclusions_by_id_name_rank_key_and_eol_file_name(download, tmp_path):
    root, _ = download
    catalog = pl.read_csv(root / "metadata" / "catalog.csv", infer_schema=False).filter(
        pl.col("split") == "train"
    )
    eol = catalog.filter(pl.col("eol_content_id") != "").row(3, named=True)
    species = catalog.row(20, named=True)
    other = catalog.filter(
        (pl.col("genus") != species["genus"]) | (pl.col("species") != species["species"])
    )
    other = other.filter(pl.col("treeoflife_id") != eol["treeoflife_id"]).row(-1, named=True)
    ranks = "-".join(
        other[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species")
    )
    rare = tmp_path / "rare.json"  # the Rare Species layout: name keys, lists of EOL file names
    rare.write_text(
        json.dumps(
            {
                f"{species['genus']} {species['species'].upper()}": [
                    f"{eol['eol_content_id']}_{eol['eol_page_id']}_eol-full-size-copy.jpg"
                ],
                ranks: [],
            }
        )
    )
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# one id a line\n{catalog['treeoflife_id'][0]}\n")
    summary = make_plan(tol_inputs(root, exclude=(rare, ids)), ["train"], 0, SHARD_SIZE, tmp_path)
    kept = set(pl.read_parquet(tmp_path / "plan" / "train.parquet")["uuid"])
    named = catalog.filter(
        ((pl.col("genus") == species["genus"]) & (pl.col("species") == species["species"]))
        | ((pl.col("genus") == other["genus"]) & (pl.col("species") == other["species"]))
    )
    gone = set(named["treeoflife_id"]) | {eol["treeoflife_id"], catalog["treeoflife_id"][0]}
    assert kept == set(catalog["treeoflife_id"]) - gone
    assert summary["splits"]["train"]["excluded"] == len(gone)


def test_own_catalog_of_photos_builds_and_checks(download, tmp_path):
    root, made = download
    photos = sorted((root / "dataset" / "inat21" / "train").rglob("*.jpg"))
    rows = [
        {
            "photo_id": f"p{i}",
            "image_path": str(p.relative_to(root)) if i % 2 else str(p),
            "kingdom": p.parent.name.split("_")[1],
            "phylum": "P",
            "class": "C",
            "order": "O",
            "family": "F",
            "genus": p.parent.name.split("_")[6],
            "species": p.parent.name.split("_")[7],
            "common": "",
        }
        for i, p in enumerate(photos)
    ]
    catalog = tmp_path / "mine.csv"
    pl.DataFrame(rows).write_csv(catalog)
    readable = [r["photo_id"] for r, p in zip(rows, photos, strict=True) if _readable(p)]
    captions = tmp_path / "captions.csv"
    pl.DataFrame({"uuid": readable[:2], "caption": ["first photo", "second photo"]}).write_csv(
        captions
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "shards",
            "--catalog",
            str(catalog),
            "--image-root",
            str(root),
            "--key-column",
            "photo_id",
            "--captions",
            str(captions),
            "--out",
            str(out),
            "--keep-aspect",
            "--image-size",
            "24",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    samples = {s["__key__"]: s for s in iter_samples(str(out / "train" / "shard-000000.tar"))}
    assert set(samples) == set(readable) and len(readable) < len(rows)
    assert set(pl.read_parquet(out / "errors.parquet")["uuid"]) == {
        r["photo_id"] for r in rows
    } - set(readable)
    first, second, third = readable[:3]
    assert samples[first]["caption.txt"] == b"first photo" and "caption.txt" not in samples[third]
    row = next(r for r in rows if r["photo_id"] == second)
    assert (
        samples[second]["scientific_name.txt"].decode()
        == f"{row['genus']} {row['species']}".capitalize()
    )
    assert Image.open(io.BytesIO(samples[first]["jpg"])).size == (24, 24)
    assert check(out, progress=False).ok


def _readable(path: Path) -> bool:
    try:
        ImagePolicy().apply(path.read_bytes())
    except BadImage:
        return False
    return True


def test_catalog_mistakes_and_a_different_rerun_are_refused(download, tmp_path):
    root, _ = download
    bad = tmp_path / "bad.csv"
    pl.DataFrame(
        {
            "image_path": ["a.jpg", "b.jpg"],
            "uuid": ["x", "x"],
            **{
                r: ["A", "B"]
                for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species")
            },
        }
    ).write_csv(bad)
    result = CliRunner().invoke(
        app, ["shards", "--catalog", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert result.exit_code == 1 and f"{bad}: 2 rows repeat an id within a split" in result.output
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['genus'\]"):
        pl.read_csv(bad).drop("genus").write_csv(bad)
        make_plan(Inputs(catalog=bad), None, 0, 4, tmp_path)
    own = tmp_path / "own.csv"
    pl.DataFrame(
        {
            "image_path": ["nowhere.jpg"],
            "uuid": ["y"],
            **{
                r: ["A"]
                for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species")
            },
        }
    ).write_csv(own)
    options = BuildOptions(progress=False)
    build(Inputs(catalog=own), tmp_path / "b", options)
    assert pl.read_parquet(tmp_path / "b" / "errors.parquet")["reason"].to_list() == [
        "missing file"
    ]
    with pytest.raises(BuildMismatch, match="holds a build of other inputs or flags"):
        build(Inputs(catalog=own), tmp_path / "b", BuildOptions(progress=False, seed=1))
    result = CliRunner().invoke(
        app, ["shards", "--catalog", str(own), "--out", str(tmp_path / "c"), "--no-progress"]
    )
    assert result.exit_code == 1 and "no sample was written" in result.output


def test_train_small_is_built_when_asked_for(download, tmp_path):
    root, made = download
    summary = make_plan(tol_inputs(root), ["train_small"], 0, SHARD_SIZE, tmp_path)
    assert summary["splits"]["train_small"]["catalog_rows"] == made["train_small_rows"]
    assert list(summary["splits"]) == ["train_small"]


def _jpeg(size: tuple[int, int], seed: int = 0, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A smooth image (a gradient with noise), as photos are, encoded as ``fmt``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    pixels = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) * 127 // sum(size)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def test_the_image_policy_squashes_crops_or_keeps_and_drafts_close_to_a_full_decode():
    import numpy as np

    photo = _jpeg((1200, 800))
    squashed = Image.open(io.BytesIO(ImagePolicy(size=64).apply(photo)))
    assert (squashed.format, squashed.mode, squashed.size) == ("JPEG", "RGB", (64, 64))
    assert ImagePolicy(resize="keep").apply(photo) == photo
    kept_png = Image.open(io.BytesIO(ImagePolicy(resize="keep").apply(_jpeg((90, 60), fmt="PNG"))))
    assert (kept_png.format, kept_png.size) == ("JPEG", (90, 60))
    cropped = Image.open(io.BytesIO(ImagePolicy(size=64, resize="crop").apply(photo)))
    assert cropped.size == (64, 64)
    # the crop keeps the middle: its left edge is red 1/6 into the gradient, the squash's at 0
    assert np.asarray(cropped)[:, 0, 0].mean() > np.asarray(squashed)[:, 0, 0].mean() + 30
    full = np.asarray(Image.open(io.BytesIO(ImagePolicy(draft=False).apply(photo))), dtype=float)
    drafted = np.asarray(Image.open(io.BytesIO(ImagePolicy().apply(photo))), dtype=float)
    assert np.abs(full - drafted).mean() < 1.5  # levels of 255
    for mode in ("CMYK", "L"):
        converted = Image.open(io.BytesIO(ImagePolicy(size=48).apply(_jpeg((100, 80), mode=mode))))
        assert converted.mode == "RGB"
    with pytest.raises(BadImage, match="decompression bomb"):
        ImagePolicy(max_pixels=100 * 100).apply(_jpeg((300, 300)))
    with pytest.raises(BadImage, match="truncated"):
        ImagePolicy().apply(photo[: len(photo) // 2])


def test_toy_as_download_writes_the_download_layout(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "toy",
            "--as-download",
            str(tmp_path / "dl"),
            "--species",
            "4",
            "--images-per-species",
            "5",
            "--val-per-species",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "24 catalog rows (+5 train_small), 17 with defects" in result.output
    header = (tmp_path / "dl" / "metadata" / "catalog.csv").read_text().splitlines()[0]
    assert header.startswith("split,treeoflife_id,eol_content_id,eol_page_id,bioscan_part")
    assert len(list((tmp_path / "dl" / "dataset" / "eol").glob("image_set_*.tar.gz"))) == 2
    assert list((tmp_path / "dl" / "dataset" / "bioscan").glob("part*/*.jpg"))
    neither = runner.invoke(app, ["toy"])
    assert neither.exit_code == 1 and "give --out DIR" in neither.output
