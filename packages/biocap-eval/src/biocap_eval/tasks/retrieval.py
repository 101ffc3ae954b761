"""Text-image retrieval (Cornell Bird, PlantID): each CSV row is one image-caption pair.

Images are ``{id}.jpg``; the text is a prefix plus the caption. Recall@K counts
a row when its own partner is among the K best (exact index, as the original:
an identical caption of another image is not a hit). The original joined
"a photo of" and the caption with no space; ``prefix_bug`` reproduces that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from biocap_core import schemas
from biocap_core.errors import BioCAPError
from biocap_eval.benchmark import Benchmark, Status
from biocap_eval.embedding import Encoder
from biocap_eval.metrics import recall_at_k
from biocap_eval.tasks.base import (
    RETRIEVAL_TABLE,
    SHOW_MISSING,
    EvalError,
    Settings,
    Task,
    TaskResult,
    count_present,
    missing_error,
    readable,
)

KS = (1, 5, 10)


def text_of(caption: str, prefix: str, prefix_bug: bool = False) -> str:
    """The tokenizer input: ``prefix caption`` (or ``prefixcaption`` with the original's bug)."""
    if not prefix:
        return caption
    return prefix + caption if prefix_bug else f"{prefix.rstrip()} {caption}"


@dataclass
class Pairs:
    ids: list[str]
    paths: list[Path]
    captions: list[str]
    skipped: list[str]


def read(bench: Benchmark, data_root: Path, skip_missing: bool = False) -> Pairs:
    """The pairs of a retrieval benchmark; a missing image is an error, or dropped with
    ``skip_missing``."""
    csv = data_root / bench.annotation
    table = schemas.RETRIEVAL.read(csv)
    root = bench.image_root(data_root)
    paths = [root / f"{i}.jpg" for i in table["id"]]
    present = [p.is_file() for p in paths]
    skipped = [str(p) for p, ok in zip(paths, present) if not ok]
    if skipped and not skip_missing:
        raise missing_error(csv, skipped, len(paths), root)
    keep = [i for i, ok in enumerate(present) if ok]
    if not keep:
        raise EvalError(
            f"{csv}: no image-caption pairs to evaluate (empty table, or every image missing)"
        )
    ids, captions = table["id"].to_list(), table["captions"].to_list()
    return Pairs(
        [ids[i] for i in keep], [paths[i] for i in keep], [captions[i] for i in keep], skipped
    )


def status(bench: Benchmark, data_root: Path) -> Status:
    csv = data_root / bench.annotation
    if not csv.is_file():
        return Status("missing", detail=f"{csv} not found")
    try:
        table = schemas.RETRIEVAL.read(csv)
    except BioCAPError as exc:
        return Status("invalid", detail=str(exc))
    root = bench.image_root(data_root)
    found = count_present([root / f"{i}.jpg" for i in table["id"]])
    state = "ready" if found == table.height else "partial" if found else "no-images"
    return Status(
        state,
        rows=table.height,
        images_found=found,
        images_expected=table.height,
        detail=f"{table.height} pairs",
    )


def evaluate(bench: Benchmark, data_root: Path, enc: Encoder, settings: Settings) -> TaskResult:
    """Recall over the pairs whose image decodes: an undecodable image drops its whole pair (its
    caption would otherwise be a query whose right answer is absent), as a missing one does."""
    pairs = read(bench, data_root, settings.skip_missing)
    embedded = enc.image_files(pairs.paths)
    keep, unreadable = readable(
        data_root / bench.annotation, embedded, pairs.paths, settings.strict
    )
    if not keep:
        raise EvalError(
            f"{data_root / bench.annotation}: no image-caption pairs to evaluate "
            "(no image could be decoded)"
        )
    captions = [pairs.captions[i] for i in keep]
    texts = enc.texts(
        [text_of(c, settings.retrieval_prefix, settings.prefix_bug) for c in captions]
    )
    similarity = embedded.vectors[keep] @ texts.T
    metrics = {}
    for direction, sim in (("i2t", similarity), ("t2i", similarity.T)):
        for k, value in recall_at_k(sim, KS).items():
            metrics[f"{direction}_R@{k}"] = 100 * value
    counts = {
        "pairs": len(keep),
        "distinct_captions": len(set(captions)),
        "skipped": len(pairs.skipped),
        "unreadable": len(unreadable),
    }
    details = {"example_text": text_of(captions[0], settings.retrieval_prefix, settings.prefix_bug)}
    if pairs.skipped:
        details["skipped_first"] = pairs.skipped[:SHOW_MISSING]
    if unreadable:
        details["unreadable"] = unreadable
    return TaskResult(metrics, counts, details)


def recorded(settings: Settings, bench: Benchmark) -> dict:
    return {"prefix": settings.retrieval_prefix, "prefix_bug": settings.prefix_bug}


def check(bench: Benchmark) -> str | None:
    return None if bench.annotation else "a retrieval benchmark needs annotation"


TASK = Task("retrieval", status, evaluate, recorded, RETRIEVAL_TABLE, check)
