"""Reference photos of an index's species: a few photos per species, linked by path (not copied),
with their image embeddings, so the demo page can show the photos of the predicted species that
look most like an upload, for the user to compare.

Kept beside the index (``biocap-predict index --images DIR``)::

    references.parquet       "row" (the species' row of taxa.parquet), "species" (its binomial,
                             checked on load: a rebuilt index with other taxa drops them),
                             "path" (absolute)
    references.safetensors   "embeddings": (photos, dim), unit rows of the taxon head

``DIR`` has one sub-folder per species, named by its binomial (``Genus epithet`` or
``Genus_epithet``, whatever the case); the first ``per_taxon`` photos of each (by name) are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from biocap_core.fileio import atomic_write
from biocap_predict.errors import TaxaIndexError

TABLE, MATRIX = "references.parquet", "references.safetensors"


@dataclass(frozen=True)
class References:
    """Reference photos: each one's species row, path and unit embedding."""

    rows: np.ndarray  # (photos,) int
    species: list[str]
    paths: list[str]
    embeddings: torch.Tensor  # (photos, dim)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, binomials: list[str]) -> References | None:
        """The references kept beside an index of these species, or None when it has none (or
        they were made for other taxa: the index was rebuilt since)."""
        folder = Path(index_dir)
        if not (folder / TABLE).is_file():
            return None
        table = pl.read_parquet(folder / TABLE)
        rows = table["row"].to_numpy()
        if rows.size and (
            rows.max() >= len(binomials)
            or [binomials[r] for r in rows] != table["species"].to_list()
        ):
            return None
        embeddings = load_file(str(folder / MATRIX))["embeddings"]
        return cls(rows, table["species"].to_list(), table["path"].to_list(), embeddings)

    def save(self, index_dir: str | os.PathLike) -> None:
        folder = Path(index_dir)
        frame = pl.DataFrame({"row": self.rows, "species": self.species, "path": self.paths})
        atomic_write(folder / TABLE, frame.write_parquet)
        tensor = self.embeddings.detach().float().cpu().contiguous()
        atomic_write(folder / MATRIX, lambda tmp: save_file({"embeddings": tensor}, str(tmp)))

    def of_species(self, row: int) -> np.ndarray:
        """Positions of the reference photos of the species at ``row``."""
        return np.flatnonzero(self.rows == row)


def reference_photos(
    folder: str | os.PathLike, binomials: list[str], per_taxon: int
) -> pl.DataFrame:
    """(row, path) of the first ``per_taxon`` files of each species sub-folder of ``folder``; a
    sub-folder naming no species of the index is an error listing it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaxaIndexError(f"{folder}: no such folder of reference photos")
    row_of = {name.lower(): i for i, name in enumerate(binomials)}
    rows, paths, unknown = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        row = row_of.get(sub.name.replace("_", " ").strip().lower())
        if row is None:
            unknown.append(sub.name)
            continue
        files = sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith("."))
        for path in files[:per_taxon]:
            rows.append(row)
            paths.append(str(path.resolve()))
    if unknown:
        raise TaxaIndexError(
            f"{folder}: sub-folders naming no species of the index (expected 'Genus epithet' or "
            f"'Genus_epithet'): {unknown[:10]}"
        )
    if not paths:
        raise TaxaIndexError(f"{folder}: no photos in species sub-folders")
    return pl.DataFrame({"row": rows, "path": paths})
