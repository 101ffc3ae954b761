"""Captions looked up by sample key from a parquet table, without rewriting shards.

A TreeOfLife-10M run has ten million captions and 8+ data workers per GPU.
A Python dict per worker would copy gigabytes into every process, so the
table is turned once into three flat files -- sorted keys (fixed-width bytes),
offsets and one UTF-8 blob -- that every worker memory-maps. Lookups are a
binary search; the operating system's page cache holds one shared copy, and
pickling the index to a worker sends only its folder name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_core.fileio import atomic_write

KEY, TEXT = schemas.CAPTIONS.column("uuid").name, schemas.CAPTIONS.column("caption").name
_FILES = ("keys.npy", "offsets.npy", "captions.bin", "meta.json")


def index_dir_for(parquet: str | os.PathLike, root: str | os.PathLike) -> Path:
    """The index folder of a parquet file under ``root``, named by the file's path, size and
    mtime."""
    path = Path(parquet).resolve()
    stat = path.stat()
    digest = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(root) / f"captions-{digest}"


class CaptionIndex:
    """``uuid -> caption`` over memory-mapped sorted arrays (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        missing = [f for f in _FILES if not (self.directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.directory}: not a caption index (missing {missing})")
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self._arrays = None

    @classmethod
    def build(cls, parquet: str | os.PathLike, directory: str | os.PathLike) -> CaptionIndex:
        """Index the ``uuid`` and ``caption`` columns of ``parquet`` into ``directory`` (reused if
        present)."""
        directory = Path(directory)
        if all((directory / f).is_file() for f in _FILES):
            return cls(directory)
        try:
            table = pl.read_parquet(parquet, columns=[KEY, TEXT])
        except pl.exceptions.ColumnNotFoundError as exc:
            raise SchemaError(
                f"--captions {parquet}: needs columns {KEY!r} and {TEXT!r} ({exc})"
            ) from exc
        n_rows = table.height
        table = table.filter(
            pl.col(KEY).is_not_null()
            & pl.col(TEXT).is_not_null()
            & (pl.col(TEXT).str.strip_chars() != "")
        )
        keys = np.array(table[KEY].to_list(), dtype=np.bytes_)
        if keys.size == 0:
            raise SchemaError(
                f"--captions {parquet}: no rows with both a uuid and a non-empty caption"
            )
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if dup.size:
            examples = [k.decode() for k in keys[dup[:3]]]
            raise SchemaError(
                f"--captions {parquet}: {dup.size} duplicate uuid(s), e.g. {examples}; "
                "keep one caption per uuid"
            )
        texts = [t.encode("utf-8") for t in table[TEXT].gather(order).to_list()]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in texts], out=offsets[1:])

        def write_blob(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                fh.writelines(texts)

        def write_array(array: np.ndarray):
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to a path
                    np.save(fh, array)

            return write

        atomic_write(directory / "keys.npy", write_array(keys))
        atomic_write(directory / "offsets.npy", write_array(offsets))
        atomic_write(directory / "captions.bin", write_blob)
        meta = {"source": str(Path(parquet).resolve()), "rows": n_rows, "indexed": int(keys.size)}
        atomic_write(directory / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta)))
        return cls(directory)

    def _open(self):
        if self._arrays is None:
            keys = np.load(self.directory / "keys.npy", mmap_mode="r")
            offsets = np.load(self.directory / "offsets.npy", mmap_mode="r")
            size = int(offsets[-1])
            blob = (
                np.memmap(self.directory / "captions.bin", dtype=np.uint8, mode="r")
                if size
                else np.zeros(0, np.uint8)
            )
            self._arrays = (keys, offsets, blob)
        return self._arrays

    def get(self, key: str) -> str | None:
        """The caption of ``key``, or None when the table has none."""
        keys, offsets, blob = self._open()
        encoded = key.encode("utf-8")
        if len(encoded) > keys.dtype.itemsize:
            return None
        i = int(np.searchsorted(keys, np.bytes_(encoded)))
        if i >= len(keys) or keys[i] != encoded:
            return None
        return bytes(blob[offsets[i] : offsets[i + 1]]).decode("utf-8")

    def __len__(self) -> int:
        return int(self.meta["indexed"])

    def __getstate__(self):
        return {"directory": self.directory, "meta": self.meta, "_arrays": None}
