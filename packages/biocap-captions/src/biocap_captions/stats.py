"""``biocap-captions stats``: what a run produced, read back from its output folder."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from biocap_captions.checks import FLAGS
from biocap_captions.store import CAPTIONS_DIR, ERRORS_DIR, PARTIAL_DIR
from biocap_core import schemas

#: Word-count histogram bins (upper bounds, inclusive); the last bin is open.
WORD_BINS = (5, 10, 15, 20, 25, 30)


def _read(files: list[Path], schema: schemas.Schema) -> pl.DataFrame:
    frames = [schema.read(f) for f in files]
    return pl.concat(frames, how="diagonal_relaxed") if frames else schema.empty()


def summarize(out: str | os.PathLike) -> dict:
    """Counts, failures by reason, flags, a word-count histogram and the share naming the
    species."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such output folder")
    caption_files = sorted((out / CAPTIONS_DIR).glob("*.parquet"))
    captions = _read(caption_files, schemas.CAPTIONS)
    errors = _read(sorted((out / ERRORS_DIR).glob("*.parquet")), schemas.CAPTION_ERRORS)
    partial_units = sorted(p.name for p in (out / PARTIAL_DIR).glob("*") if p.is_dir())
    in_progress = sum(
        pl.scan_parquet(p).select(pl.len()).collect().item()
        for unit in partial_units
        for p in (out / PARTIAL_DIR / unit).glob("*.parquet")
    )
    n = captions.height
    words = (
        captions["word_count"]
        if "word_count" in captions.columns
        else pl.Series([], dtype=pl.Int64)
    )
    histogram, low = {}, 0
    for high in WORD_BINS:
        histogram[f"{low}-{high}"] = int(words.is_between(low, high).sum())
        low = high + 1
    histogram[f">{WORD_BINS[-1]}"] = int((words > WORD_BINS[-1]).sum())
    flag_lists = (
        captions["flags"].fill_null("").str.split(",")
        if n
        else pl.Series([], dtype=pl.List(pl.String))
    )
    flags = (
        {f: int(flag_lists.list.contains(f).sum()) for f in FLAGS} if n else {f: 0 for f in FLAGS}
    )
    reasons = (
        errors.with_columns(pl.col("reason").str.split(":").list.first().alias("kind"))
        .group_by("kind")
        .len()
        .sort("len", descending=True)
    )
    return {
        "units_finished": len(caption_files),
        "units_in_progress": len(partial_units),
        "samples_in_progress": int(in_progress),
        "captions": n,
        "errors": errors.height,
        "error_kinds": dict(zip(reasons["kind"].to_list(), reasons["len"].to_list())),
        "models": captions["model"].unique().sort().to_list(),
        "prompt_versions": captions["prompt_version"].unique().sort().to_list(),
        "finish_reasons": {
            str(k): v for k, v in captions.group_by("finish_reason").len().iter_rows()
        },
        "wiki_used": _share(captions["wiki_used"].sum(), n),
        "names_species": (
            _share(captions["names_species"].sum(), n)
            if "names_species" in captions.columns
            else None
        ),
        "mean_words": round(float(words.mean()), 2) if n else None,
        "word_histogram": histogram,
        "flags": flags,
    }


def _share(count, total: int) -> float | None:
    return round(float(count or 0) / total, 4) if total else None


def render(summary: dict) -> str:
    """The summary as a short text report with a bar histogram."""
    lines = [
        (
            f"units finished: {summary['units_finished']}, in progress:"
            f" {summary['units_in_progress']} ({summary['samples_in_progress']} samples"
            " checkpointed)"
        ),
        f"captions: {summary['captions']}   errors: {summary['errors']}",
        (
            f"models: {', '.join(summary['models']) or '-'}   prompt versions:"
            f" {', '.join(summary['prompt_versions']) or '-'}"
        ),
        (
            f"share naming the species: {_pct(summary['names_species'])}   wiki used:"
            f" {_pct(summary['wiki_used'])}   mean words: {summary['mean_words']}"
        ),
        "finish reasons: "
        + (", ".join(f"{k} {v}" for k, v in summary["finish_reasons"].items()) or "-"),
        "flags: " + ", ".join(f"{k} {v}" for k, v in summary["flags"].items()),
        "words per caption:",
    ]
    peak = max(summary["word_histogram"].values(), default=0) or 1
    for label, count in summary["word_histogram"].items():
        lines.append(f"  {label:>6} {count:>9}  {'#' * round(40 * count / peak)}")
    if summary["error_kinds"]:
        lines.append("errors by kind:")
        lines += [f"  {count:>9}  {kind}" for kind, count in summary["error_kinds"].items()]
    return "\n".join(lines)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"
