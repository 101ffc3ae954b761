"""The plan of a build, on disk under ``<out>/.build/plan``: one parquet file per split (its rows
in shard order, a row group per shard, so a worker reads only its shard's rows) and the sorted
64-bit keys of the EOL images, memory-mapped by every worker. Nothing else about the catalog is
held in a worker, whatever its size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from biocap_core.fileio import atomic_write
from biocap_core.shard_builder.catalog import (
    PLAN_COLUMNS,
    TOL_SOURCES,
    Inputs,
    excluded,
    key64,
    read_captions,
    read_catalog,
)

#: ``train_small`` repeats rows of ``train`` (a subset), so it is built only when asked for.
SUBSET_SPLITS = {"train_small": "train"}


def plan_dir(work: Path) -> Path:
    return work / "plan"


def make_plan(
    inputs: Inputs, splits: list[str] | None, seed: int, shard_size: int, work: Path
) -> dict:
    """Read and validate the catalog, choose the rows, order them and write the plan; returns the
    summary (also ``plan/summary.json``): per split its counts and number of shards."""
    df, is_tol = read_catalog(inputs)
    present = sorted(df["split"].unique().to_list())
    if splits is None:
        splits = [s for s in present if not (s in SUBSET_SPLITS and SUBSET_SPLITS[s] in present)]
    unknown = [s for s in splits if s not in present]
    if unknown:
        raise ValueError(f"--split {unknown[0]}: not in {inputs.catalog} (its splits: {present})")
    df = df.filter(pl.col("split").is_in(splits))
    if inputs.exclude:
        df = df.with_columns(_excluded=excluded(df, inputs.exclude))
    else:
        df = df.with_columns(_excluded=pl.lit(False))
    if inputs.captions:
        df = df.join(read_captions(inputs.captions), on="uuid", how="left")
    else:
        df = df.with_columns(caption=pl.lit(None, dtype=pl.String))
    out = plan_dir(work)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"tol": is_tol, "seed": seed, "shard_size": shard_size, "splits": {}}
    for split in splits:
        rows = df.filter(pl.col("split") == split)
        counts = {"catalog_rows": rows.height, "excluded": int(rows["_excluded"].sum())}
        rows = rows.filter(~pl.col("_excluded"))
        if is_tol:
            counts["no_source"] = rows["source"].null_count()
            folders = inputs.folders()
            counts["source_not_given"] = {
                s: int((rows["source"] == s).sum())
                for s in TOL_SOURCES
                if folders[s] is None and (rows["source"] == s).any()
            }
            rows = rows.filter(
                pl.col("source").is_in([s for s in TOL_SOURCES if folders[s] is not None])
                | pl.col("source").is_null()
            )
        rows = _permuted(rows.select(PLAN_COLUMNS), seed, shard_size)
        counts["planned"] = rows.height
        counts["with_caption"] = rows.height - rows["caption"].null_count()
        counts["shards"] = math.ceil(rows.height / shard_size)
        atomic_write(
            out / f"{split}.parquet",
            lambda tmp, rows=rows: rows.write_parquet(
                tmp, row_group_size=shard_size, statistics=True
            ),
        )
        summary["splits"][split] = counts
    wanted = (pl.col("source") == "eol") & ~pl.col("_excluded")
    eol = df.filter(wanted) if is_tol and inputs.eol else df.clear()
    eol, df = eol.select("uuid"), None
    keys = np.unique(key64(eol["uuid"].unique()))
    if len(keys) != eol["uuid"].n_unique():
        raise ValueError("two EOL ids share a 64-bit key; build with fewer splits at a time")
    atomic_write(out / "eol_keys.npy", lambda tmp: np.save(open(tmp, "wb"), keys))
    summary["eol_images"] = len(keys)
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return summary


def _permuted(rows: pl.DataFrame, seed: int, shard_size: int) -> pl.DataFrame:
    """The rows in the order of their seeded keys (ties by id), with ``pos`` and ``shard``."""
    order = pl.Series("_order", key64(rows["uuid"], seed), dtype=pl.UInt64)
    rows = rows.with_columns(order).sort("_order", "uuid").drop("_order").with_row_index("pos")
    return rows.with_columns(shard=(pl.col("pos") // shard_size).cast(pl.Int64))


def read_summary(work: Path) -> dict:
    return json.loads((plan_dir(work) / "summary.json").read_text())


def shard_rows(work: Path, split: str, shard: int) -> pl.DataFrame:
    """The plan rows of one shard, in order (only its row groups are read)."""
    return (
        pl.scan_parquet(plan_dir(work) / f"{split}.parquet")
        .filter(pl.col("shard") == shard)
        .collect()
    )


def eol_keys(work: Path) -> np.ndarray:
    """The sorted keys of the planned EOL images, memory-mapped (shared by every worker)."""
    return np.load(plan_dir(work) / "eol_keys.npy", mmap_mode="r")
