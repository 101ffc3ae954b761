"""Restricting an index to part of the tree before the softmax: ``--within rank=value`` and
``--subset``.

Names match whatever their case; the species rank is matched by binomial ("Genus epithet"), as in
pybioclip's subset files. A name the index does not hold is an error listing it, never a silent
empty result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

from biocap_core.taxonomy import RANKS
from biocap_predict.errors import PredictInputError
from biocap_predict.index import TaxaIndex

Filters = dict[str, list[str]]


def parse_within(within: str | Mapping[str, str | Iterable[str]] | Iterable[str] | None) -> Filters:
    """``"order=Lepidoptera"``, ``"family=A,B"``, a list of those, or ``{"order":
    "Lepidoptera"}``."""
    if within is None:
        return {}
    if isinstance(within, Mapping):
        items = [(k, [v] if isinstance(v, str) else list(v)) for k, v in within.items()]
    else:
        items = []
        for spec in [within] if isinstance(within, str) else within:
            rank, sep, values = spec.partition("=")
            if not sep or not values.strip():
                raise PredictInputError(
                    f"--within {spec!r}: expected RANK=NAME[,NAME...], e.g. order=Lepidoptera"
                )
            items.append((rank, values.split(",")))
    filters: Filters = {}
    for rank, values in items:
        rank = rank.strip().lower()
        if rank not in RANKS:
            raise PredictInputError(
                f"--within: unknown rank {rank!r}; expected one of {', '.join(RANKS)}"
            )
        filters.setdefault(rank, []).extend(v.strip() for v in values if v.strip())
    return filters


def read_subset(path: str | os.PathLike) -> Filters:
    """A pybioclip subset CSV: the first column is named after a rank and lists the names to
    keep."""
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PredictInputError(f"{path}: cannot read the subset CSV: {exc}") from exc
    if table.width == 0 or table.columns[0].strip().lower() not in RANKS:
        raise PredictInputError(
            f"{path}: the first column must be named after a rank ({', '.join(RANKS)}); "
            f"found {table.columns[:1]}"
        )
    values = [v for v in table[table.columns[0]].to_list() if v and v.strip()]
    if not values:
        raise PredictInputError(f"{path}: the subset lists no names")
    return {table.columns[0].strip().lower(): values}


def matching(index: TaxaIndex, filters: Filters) -> np.ndarray:
    """Boolean mask of the taxa matching every filter (names of one rank are alternatives)."""
    keep = np.ones(len(index), dtype=bool)
    for rank, values in filters.items():
        column = index.binomials() if rank == "species" else index.taxa[rank]
        lowered = column.str.to_lowercase()
        wanted = [v.lower() for v in values]
        present = set(lowered.unique().to_list())
        unknown = [v for v, low in zip(values, wanted) if low not in present]
        if unknown:
            raise PredictInputError(
                f"unknown {rank} name(s) {unknown[:10]}: the index has no such {rank}"
                + (" (species are named 'Genus epithet')" if rank == "species" else "")
            )
        keep &= lowered.is_in(wanted).to_numpy()
    return keep


def restrict(index: TaxaIndex, filters: Filters) -> TaxaIndex:
    """The part of ``index`` matching every filter."""
    if not filters:
        return index
    keep = matching(index, filters)
    if not keep.any():
        raise PredictInputError(f"no taxon of the index matches all of {filters}")
    return index.select(keep)
