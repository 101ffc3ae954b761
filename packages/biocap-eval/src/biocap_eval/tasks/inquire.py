"""INQUIRE-Rerank: reorder each query's fixed candidates by cosine similarity to the raw query text.

Candidates come from a local table (``query, filepath, relevant``; CSV or
parquet, image paths relative to the benchmark's image folder) or, when that is
absent and ``datasets`` is installed, from the Hugging Face dataset
(``evendrow/INQUIRE-Rerank``, images as bytes). Each distinct image is encoded
once. Metrics per query follow INQUIRE (see :mod:`biocap_eval.metrics`) and are
averaged over queries, overall and per supercategory (from the queries table,
else from the candidates' own ``supercategory`` column).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biocap_core import schemas
from biocap_core.errors import BioCAPError
from biocap_eval.benchmark import Benchmark, Status, hf_available
from biocap_eval.embedding import Encoder, ImageEmbeddings
from biocap_eval.metrics import rerank_metrics
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


@dataclass
class Candidates:
    """One row per (query, candidate image); ``image`` indexes the distinct images."""

    queries: list[str]
    image: list[int]
    relevant: list[int]
    supercategory: dict[str, str]
    n_images: int
    embed: Callable[[Encoder], ImageEmbeddings]  # embeddings of the distinct images
    names: list[str]  # of the distinct images, for errors and the result
    source: str
    skipped: list[str]


def _supercategories(bench: Benchmark, data_root: Path, fallback: dict[str, str]) -> dict[str, str]:
    if bench.queries and (data_root / bench.queries).is_file():
        table = schemas.INQUIRE_QUERIES.read(data_root / bench.queries)
        return dict(zip(table["query_text"], table["supercategory"]))
    return fallback


def _row_supercategories(queries, supercategories) -> dict[str, str]:
    return {q: s for q, s in zip(queries, supercategories) if s}


def read_local(bench: Benchmark, data_root: Path, skip_missing: bool = False) -> Candidates:
    path = data_root / bench.candidates
    table = schemas.INQUIRE_RERANK.read(path)
    root = bench.image_root(data_root, bench.candidates)
    files = [root / p for p in table["filepath"]]
    present = [p.is_file() for p in files]
    skipped = sorted({str(p) for p, ok in zip(files, present) if not ok})
    if skipped and not skip_missing:
        raise missing_error(path, skipped, len(set(files)), root)
    keep = [i for i, ok in enumerate(present) if ok]
    distinct = {files[i]: None for i in keep}
    index = {p: n for n, p in enumerate(distinct)}
    paths = list(distinct)
    queries = table["query"].to_list()
    rows_super = (
        table["supercategory"].to_list()
        if "supercategory" in table.columns
        else [None] * table.height
    )
    return Candidates(
        queries=[queries[i] for i in keep],
        image=[index[files[i]] for i in keep],
        relevant=[int(v) for v in table["relevant"].gather(keep).to_list()] if keep else [],
        supercategory=_supercategories(bench, data_root, _row_supercategories(queries, rows_super)),
        n_images=len(paths),
        embed=lambda enc: enc.image_files(paths),
        names=[str(p) for p in paths],
        source=str(path),
        skipped=skipped,
    )


def read_hf(bench: Benchmark, data_root: Path) -> Candidates:
    """Candidates from a Hugging Face dataset (a Hub name or a local dataset folder)."""
    if not hf_available():
        raise EvalError(
            f"{bench.name}: no local candidates and the `datasets` package is missing; "
            f"install biocap-eval[hf] to read {bench.hf_dataset} from the Hugging Face Hub"
        )
    import datasets

    source = f"{bench.hf_dataset} (split {bench.hf_split})"
    try:
        ds = datasets.load_dataset(bench.hf_dataset, split=bench.hf_split)
    except Exception as exc:  # offline, unknown repo, bad split: datasets raises many types
        raise EvalError(
            f"{bench.name}: cannot load {source} from the Hugging Face Hub: {exc}; "
            f"or put the candidates at {data_root / (bench.candidates or '')}"
        ) from exc
    missing = [
        c for c in ("query", "relevant", "inat24_image_id", "image") if c not in ds.column_names
    ]
    if missing:
        raise EvalError(f"{source}: missing column(s) {missing}; it has {ds.column_names}")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    queries = list(ds["query"])
    ids = list(ds["inat24_image_id"])
    first_row: dict[int, int] = {}
    for row, image_id in enumerate(ids):
        first_row.setdefault(image_id, row)
    index = {image_id: n for n, image_id in enumerate(first_row)}
    rows = list(first_row.values())
    keys = [f"hf:{bench.hf_dataset}:{ds._fingerprint}:{image_id}" for image_id in first_row]
    supers = (
        list(ds["supercategory"]) if "supercategory" in ds.column_names else [None] * len(queries)
    )
    return Candidates(
        queries=queries,
        image=[index[i] for i in ids],
        relevant=[int(v) for v in ds["relevant"]],
        supercategory=_supercategories(bench, data_root, _row_supercategories(queries, supers)),
        n_images=len(rows),
        embed=lambda enc: enc.hf_images(ds, rows, keys),
        names=[f"{bench.hf_dataset} inat24_image_id {image_id}" for image_id in first_row],
        source=source,
        skipped=[],
    )


def uses_hub(bench: Benchmark, data_root: Path) -> bool:
    return (
        not (bench.candidates and (data_root / bench.candidates).is_file())
        and bench.hf_dataset is not None
    )


def read(bench: Benchmark, data_root: Path, skip_missing: bool = False) -> Candidates:
    if uses_hub(bench, data_root):
        return read_hf(bench, data_root)
    if not bench.candidates:
        raise EvalError(f"{bench.name}: no candidates table configured")
    return read_local(bench, data_root, skip_missing)


def status(bench: Benchmark, data_root: Path) -> Status:
    notes = []
    queries = data_root / bench.queries if bench.queries else None
    if queries is not None:
        if queries.is_file():
            try:
                n = schemas.INQUIRE_QUERIES.read(queries).height
            except BioCAPError as exc:
                return Status("invalid", detail=str(exc))
            notes.append(f"{n} queries in {bench.queries}")
    candidates = data_root / bench.candidates if bench.candidates else None
    if candidates is not None and candidates.is_file():
        try:
            table = schemas.INQUIRE_RERANK.read(candidates)
        except BioCAPError as exc:
            return Status("invalid", detail=str(exc))
        root = bench.image_root(data_root, bench.candidates)
        files = sorted({root / p for p in table["filepath"]})
        found = count_present(files)
        state = "ready" if found == len(files) else "partial" if found else "no-images"
        n_queries = table["query"].n_unique()
        if queries is not None and not queries.is_file():
            notes.append(
                f"{queries} not found: per-supercategory means only if the candidates carry them"
            )
        return Status(
            state,
            rows=table.height,
            images_found=found,
            images_expected=len(files),
            detail=f"{n_queries} queries, {table.height} candidates",
            notes=notes,
        )
    hub = f"{bench.hf_dataset} (split {bench.hf_split})"
    if bench.hf_dataset and hf_available():
        return Status(
            "hub", detail=f"candidates and images from the Hugging Face Hub: {hub}", notes=notes
        )
    if queries is None or not queries.is_file():
        return Status("missing", detail=f"neither {candidates} nor {queries} found", notes=notes)
    where = f"put candidates at {candidates}" if candidates else "configure candidates"
    if bench.hf_dataset:
        where += f", or install biocap-eval[hf] to read {hub}"
    return Status("no-images", detail=f"annotations only: {where}", notes=notes)


def evaluate(bench: Benchmark, data_root: Path, enc: Encoder, settings: Settings) -> TaskResult:
    """Metrics per query over its candidates whose image decodes.

    An undecodable image leaves every query it is a candidate of, as a missing
    one does with ``skip_missing``: a relevant one then no longer counts in the
    query's positives, so scores are over what the model could rank; a query
    left with no candidate is not scored.
    """
    cands = read(bench, data_root, settings.skip_missing)
    if not cands.queries:
        raise EvalError(
            f"{cands.source}: no candidates to evaluate (empty table, or every image missing)"
        )
    embedded = cands.embed(enc)
    _, unreadable = readable(cands.source, embedded, cands.names, settings.strict)
    images = embedded.vectors
    by_query: dict[str, list[int]] = defaultdict(list)
    for row, q in enumerate(cands.queries):
        if cands.image[row] not in embedded.unreadable:
            by_query[q].append(row)
    if not by_query:
        raise EvalError(f"{cands.source}: no candidates to evaluate (no image could be decoded)")
    names = list(by_query)
    texts = enc.texts(names)
    image_index = np.asarray(cands.image)
    relevant = np.asarray(cands.relevant)
    per_query = []
    for q, text in zip(names, texts):
        rows = np.asarray(by_query[q])
        scores = (images[image_index[rows]] @ text).numpy()
        m = rerank_metrics(relevant[rows], scores, settings.inquire_k)
        per_query.append(
            {
                "query": q,
                "supercategory": cands.supercategory.get(q),
                "candidates": m.n_candidates,
                "relevant": m.n_relevant,
                "ap": 100 * m.ap,
                "ndcg": 100 * m.ndcg,
                "mrr": m.mrr,
                "precision": 100 * m.precision,
                "recall": 100 * m.recall,
            }
        )
    metrics = _means(per_query, "")
    groups = sorted({r["supercategory"] for r in per_query if r["supercategory"]})
    for g in groups:
        metrics.update(_means([r for r in per_query if r["supercategory"] == g], f"_{g}"))
    counts = {
        "queries": len(per_query),
        "candidates": sum(len(rows) for rows in by_query.values()),
        "images": cands.n_images - len(unreadable),
        "skipped": len(cands.skipped),
        "unreadable": len(unreadable),
        "queries_without_supercategory": sum(1 for r in per_query if not r["supercategory"]),
    }
    counts.update(
        {f"queries_{g}": sum(1 for r in per_query if r["supercategory"] == g) for g in groups}
    )
    details = {"source": cands.source, "per_query": per_query}
    if cands.skipped:
        details["skipped_first"] = cands.skipped[:SHOW_MISSING]
    if unreadable:
        details["unreadable"] = unreadable
    return TaskResult(metrics, counts, details)


def _means(rows: list[dict], suffix: str) -> dict[str, float]:
    return {
        f"{m}{suffix}": float(np.mean([r[m] for r in rows]))
        for m in ("ap", "ndcg", "mrr", "precision", "recall")
    }


def recorded(settings: Settings, bench: Benchmark) -> dict:
    return {"k": settings.inquire_k}


def check(bench: Benchmark) -> str | None:
    if bench.candidates or bench.hf_dataset:
        return None
    return "an inquire benchmark needs candidates and/or hf_dataset"


TASK = Task("inquire", status, evaluate, recorded, RETRIEVAL_TABLE, check)
