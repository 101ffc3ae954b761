"""Zero-shot species classification, as the original (BioCLIP's zero-shot script).

Class texts come from the annotation table per label text type, first-appearance
class order; each class is the mean of its template embeddings; an image's class
is the nearest class text. Benchmarks with ``subsets`` (Camera Trap) report the
mean of their subsets' metrics, as the paper's single Camera Trap number.
"""

from __future__ import annotations

from pathlib import Path

import torch

from biocap_core.errors import BioCAPError
from biocap_core.taxonomy import LABEL_TYPES
from biocap_core.zeroshot import ClassificationSet, per_class_recall, read_labels, topk_accuracy
from biocap_eval.benchmark import Benchmark, Status
from biocap_eval.embedding import Encoder
from biocap_eval.tasks.base import (
    SHOW_MISSING,
    ZEROSHOT_TABLE,
    EvalError,
    Settings,
    Task,
    TaskResult,
    count_present,
    readable,
)

KS = (1, 3, 5)


def annotation_files(bench: Benchmark) -> list[tuple[str, str]]:
    """(subset name, relative path) of every annotation table the benchmark reads."""
    if bench.subsets:
        return [(s.name, s.annotation) for s in bench.subsets]
    return [(bench.name, bench.annotation)]


def status(bench: Benchmark, data_root: Path) -> Status:
    """Read every annotation table (labels built, images not opened) and count the images on
    disk."""
    rows = found = expected = 0
    classes: list[str] = []
    for _name, rel in annotation_files(bench):
        csv = data_root / rel
        if not csv.is_file():
            return Status("missing", detail=f"{csv} not found")
        try:
            table, labels = read_labels(csv, bench.label_type)
        except BioCAPError as exc:
            return Status("invalid", detail=str(exc))
        root = bench.image_root(data_root, rel)
        paths = [root / p for p in table["filepath"]]
        rows += table.height
        expected += len(paths)
        found += count_present(paths)
        classes += list(dict.fromkeys(labels))
    state = "ready" if found == expected else "partial" if found else "no-images"
    detail = f"{rows} images, {len(classes)} classes ({bench.label_type})"
    return Status(state, rows=rows, images_found=found, images_expected=expected, detail=detail)


def evaluate(bench: Benchmark, data_root: Path, enc: Encoder, settings: Settings) -> TaskResult:
    label_type = settings.label_type or bench.label_type
    subsets = {}
    for name, rel in annotation_files(bench):
        data = ClassificationSet.from_csv(
            data_root / rel,
            bench.image_root(data_root, rel),
            label_type,
            skip_missing=settings.skip_missing,
        )
        subsets[name] = _classify(data, enc, settings)
    if len(subsets) == 1:
        return next(iter(subsets.values()))
    first = next(iter(subsets.values()))
    metrics = {m: sum(r.metrics[m] for r in subsets.values()) / len(subsets) for m in first.metrics}
    counts = {c: sum(r.counts[c] for r in subsets.values()) for c in first.counts}
    details = {
        "aggregate": f"mean of {len(subsets)} subsets",
        "subsets": {
            n: {"metrics": r.metrics, "counts": r.counts, **r.details} for n, r in subsets.items()
        },
    }
    return TaskResult(metrics, counts, details)


def _classify(data: ClassificationSet, enc: Encoder, settings: Settings) -> TaskResult:
    """Metrics over the images that decode: an undecodable image is dropped with its label (its
    class stays a candidate), so accuracies are over the images the model actually saw."""
    embedded = enc.image_files(data.paths)
    keep, unreadable = readable(data.source, embedded, data.paths, settings.strict)
    if not keep:
        raise EvalError(f"{data.source}: no images to evaluate (no image could be decoded)")
    # The original multiplies by exp(logit_scale); a positive scale changes no ranking.
    logits = embedded.vectors[keep] @ enc.classifier(data.classnames, settings.templates)
    labels = torch.tensor([data.labels[i] for i in keep])
    acc = topk_accuracy(logits, labels, KS)
    recall = per_class_recall(logits, labels, len(data.classnames))
    metrics = {f"top{k}": 100 * acc[k] for k in KS}
    metrics["mean_per_class_recall"] = 100 * recall.nanmean().item()
    counts = {
        "images": len(keep),
        "classes": len(data.classnames),
        "skipped": len(data.skipped),
        "unreadable": len(unreadable),
    }
    details: dict = {"source": data.source}
    if data.skipped:
        details["skipped_first"] = data.skipped[:SHOW_MISSING]
    if unreadable:
        details["unreadable"] = unreadable
    if settings.per_class:
        n = torch.bincount(labels, minlength=len(data.classnames))
        details["per_class"] = [
            {
                "class": c,
                "images": int(n[i]),
                "top1_recall": None if n[i] == 0 else 100 * recall[i].item(),
            }
            for i, c in enumerate(data.classnames)
        ]
    return TaskResult(metrics, counts, details)


def recorded(settings: Settings, bench: Benchmark) -> dict:
    return {
        "label_type": settings.label_type or bench.label_type,
        "templates": list(settings.templates),
        "templates_source": settings.templates_source,
        "per_class": settings.per_class,
    }


def check(bench: Benchmark) -> str | None:
    if bool(bench.annotation) == bool(bench.subsets):
        return "a zeroshot benchmark needs either annotation or subsets"
    if bench.label_type not in LABEL_TYPES:
        return f"label_type {bench.label_type!r} is not one of {LABEL_TYPES}"
    return None


TASK = Task("zeroshot", status, evaluate, recorded, ZEROSHOT_TABLE, check)
