"""Writing prediction rows and image embeddings, and reading embeddings back.

Rows are written in blocks of at least :data:`BLOCK_ROWS` (CSV and JSONL lines by polars; parquet as
part files joined by a streaming sink at the end), so a long run holds one block in memory. The
``table`` format is for people reading a terminal, so it is laid out once at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import torch

from biocap_core.fileio import atomic_write
from biocap_predict.errors import PredictInputError

ROW_FORMATS = ("csv", "table", "jsonl", "parquet")
#: Rows gathered before a write: each polars write costs about 0.3-0.5 ms whatever its size, as much
#: as 160 rows of a batch take to make (measured), so rows are written a few thousand at a time.
BLOCK_ROWS = 4096
EMBEDDING_FORMATS = ("parquet", "npz", "jsonl")
#: Columns of numbers (the rest are text).
SCORE_COLUMNS = ("score", "rollup_score")


class RowWriter:
    """Streams rows (polars DataFrames) to ``path`` (stdout when None) in one of
    :data:`ROW_FORMATS`; a batch's columns missing from ``columns`` are written empty."""

    def __init__(self, path: str | os.PathLike | None, fmt: str, columns: Sequence[str]):
        if fmt not in ROW_FORMATS:
            raise PredictInputError(f"unknown format {fmt!r}; expected one of {ROW_FORMATS}")
        if fmt == "parquet" and path is None:
            raise PredictInputError("--format parquet needs --output FILE")
        self.path, self.fmt, self.columns = (Path(path) if path else None), fmt, list(columns)
        self.count = 0
        self._block: list[
            pl.DataFrame
        ] = []  # rows not written yet (``table``: all of them, until close)
        self._block_rows = 0
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parts: Path | None = (
            Path(tempfile.mkdtemp(prefix=".parts-", dir=self.path.parent))
            if fmt == "parquet"
            else None
        )
        self._fh: IO[str] | None = (
            (open(self.path, "w", newline="") if self.path else sys.stdout)
            if fmt in ("csv", "jsonl")
            else None
        )
        if fmt == "csv":
            pl.DataFrame(schema=self._schema()).write_csv(self._fh)

    def write(self, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        if rows.columns != self.columns:
            rows = rows.select(
                [pl.col(c) if c in rows.columns else pl.lit("").alias(c) for c in self.columns]
            )
        self._block.append(rows)
        self._block_rows += rows.height
        self.count += rows.height
        if self._block_rows >= BLOCK_ROWS and self.fmt != "table":
            self._write_block()

    def _joined(self) -> pl.DataFrame | None:
        """The rows not written yet, as one frame (None when there are none)."""
        if not self._block:
            return None
        return (
            pl.concat(self._block, how="vertical_relaxed")
            if len(self._block) > 1
            else self._block[0]
        )

    def _write_block(self) -> None:
        rows = self._joined()
        if rows is None:
            return
        if self.fmt == "csv":
            rows.write_csv(self._fh, include_header=False)
        elif self.fmt == "jsonl":
            rows.write_ndjson(self._fh)
        else:
            rows.cast(self._schema()).write_parquet(self._parts / f"{self.count:012d}.parquet")
        self._block, self._block_rows = [], 0

    def close(self) -> None:
        if self.fmt == "table":
            rows = self._joined()
            self._write_text(
                format_table(rows.to_dicts() if rows is not None else [], self.columns)
            )
            return
        self._write_block()
        if self.fmt == "parquet":
            parts = sorted(self._parts.glob("*.parquet"))
            frame = pl.scan_parquet(parts) if parts else pl.LazyFrame(schema=self._schema())
            atomic_write(self.path, lambda tmp: frame.sink_parquet(tmp))
            shutil.rmtree(self._parts, ignore_errors=True)
        elif self._fh is not sys.stdout:
            self._fh.close()
        else:
            self._fh.flush()

    def _schema(self) -> dict[str, pl.DataType]:
        return row_schema(self.columns)

    def _write_text(self, text: str) -> None:
        if self.path:
            self.path.write_text(text)
        else:
            sys.stdout.write(text)


def row_schema(columns: Sequence[str]) -> dict[str, pl.DataType]:
    """The types of prediction columns: scores are floats, the rest strings."""
    return {c: pl.Float64 if c in SCORE_COLUMNS else pl.String for c in columns}


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A plain aligned text table (scores with 4 decimals)."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def read_rows(path: str | os.PathLike, fmt: str) -> list[dict]:
    """Rows of a prediction file written by :class:`RowWriter` (not ``table``), scores as floats."""
    path = Path(path)
    if fmt == "csv":
        with open(path, newline="") as fh:
            return [{**r, "score": float(r["score"])} for r in csv.DictReader(fh)]
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    if fmt == "parquet":
        return pl.read_parquet(path).to_dicts()
    raise PredictInputError(f"cannot read rows back from format {fmt!r}")


# ---- embeddings ----
class EmbeddingWriter:
    """Image embeddings with their file names, heads and the model fingerprint, in one of
    :data:`EMBEDDING_FORMATS`; ``predict --embeddings`` reads any of them back."""

    def __init__(self, path: str | os.PathLike, fmt: str, fingerprint: str, normalized: bool):
        if fmt not in EMBEDDING_FORMATS:
            raise PredictInputError(
                f"unknown embedding format {fmt!r}; expected one of {EMBEDDING_FORMATS}"
            )
        self.path, self.fmt = Path(path), fmt
        self.meta = {"model_fingerprint": fingerprint, "normalized": normalized}
        self.count = 0
        self._names: list[str] = []
        self._feats: dict[str, list[torch.Tensor]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w") if fmt == "jsonl" else None

    def write(self, names: list[str], feats: dict[str, torch.Tensor]) -> None:
        if self._fh:
            lists = {h: f.tolist() for h, f in feats.items()}
            for i, name in enumerate(names):
                self._fh.write(
                    json.dumps(
                        {"file_name": name, **self.meta, **{h: v[i] for h, v in lists.items()}}
                    )
                    + "\n"
                )
        else:
            self._names += names
            for head, f in feats.items():
                self._feats.setdefault(head, []).append(f.float().cpu())
        self.count += len(names)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            return
        feats = {h: torch.cat(parts).numpy() for h, parts in self._feats.items()}
        if self.fmt == "npz":

            def save(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    np.savez(
                        fh,
                        file_name=np.array(self._names),
                        meta=np.array(json.dumps(self.meta)),
                        **feats,
                    )

            atomic_write(self.path, save)
        else:
            frame = pl.DataFrame(
                {"file_name": self._names, **{h: list(v) for h, v in feats.items()}}
            )
            frame = frame.with_columns(
                pl.lit(self.meta["model_fingerprint"]).alias("model_fingerprint"),
                pl.lit(self.meta["normalized"]).alias("normalized"),
            )
            atomic_write(self.path, frame.write_parquet)


def read_embeddings(
    path: str | os.PathLike,
) -> tuple[list[str], dict[str, torch.Tensor], str | None]:
    """(file names, {head: (n, dim) tensor}, model fingerprint or None) of an embeddings file."""
    path = Path(path)
    if not path.is_file():
        raise PredictInputError(f"{path}: no such embeddings file")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
                feats = {
                    h: torch.from_numpy(z[h].astype(np.float32))
                    for h in ("tax", "caption")
                    if h in z
                }
                names = [str(n) for n in z["file_name"]]
            return names, feats, meta.get("model_fingerprint")
        frame = (
            pl.read_parquet(path)
            if path.suffix == ".parquet"
            else pl.read_ndjson(io.BytesIO(path.read_bytes()), infer_schema_length=None)
        )
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
        raise PredictInputError(
            f"{path}: cannot read as embeddings (.parquet, .npz or .jsonl from "
            f"`biocap-predict embed`): {exc}"
        ) from exc
    heads = [h for h in ("tax", "caption") if h in frame.columns]
    if "file_name" not in frame.columns or not heads:
        raise PredictInputError(
            f"{path}: needs a file_name column and a tax and/or caption column; has {frame.columns}"
        )
    feats = {h: torch.tensor(np.array(frame[h].to_list(), dtype=np.float32)) for h in heads}
    fingerprint = (
        frame["model_fingerprint"][0]
        if "model_fingerprint" in frame.columns and frame.height
        else None
    )
    return frame["file_name"].to_list(), feats, fingerprint
