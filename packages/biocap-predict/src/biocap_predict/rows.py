"""Output rows, with pybioclip's column names (plus ``rank``) so its users' scripts keep working.

A batch's rows are built column by column as one polars DataFrame (a gather of the hits' names
from the index's table, literals for the empty ranks), not as a dict per row: at the toy model's
speed the per-row version cost as much as a fifth of the forward pass. ``to_dicts()`` gives
pybioclip's list of rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from biocap_core.taxonomy import RANKS
from biocap_predict.errors import PredictInputError
from biocap_predict.scoring import SPECIES, TopK

#: Columns of a tree-of-life prediction, in order.
TAXON_COLUMNS = ("file_name", "kingdom", "phylum", "class", "order", "family", "genus", "species_epithet",
                 "species", "common_name", "score", "rank")
#: Columns of a custom-label or bin prediction.
LABEL_COLUMNS = ("file_name", "classification", "score")
ALL_RANKS = "all"
_EMPTY = pl.lit("", pl.String)


def parse_rank(rank: str) -> tuple[int, ...]:
    """Rank levels (0 kingdom .. 6 species) a ``--rank`` value asks for; ``all`` is every rank."""
    name = getattr(rank, "value", rank)
    name = str(name).lower()
    if name == ALL_RANKS:
        return tuple(range(len(RANKS)))
    if name not in RANKS:
        raise PredictInputError(f"unknown rank {rank!r}; expected one of {', '.join(RANKS)} or {ALL_RANKS}")
    return (RANKS.index(name),)


def _per_hit(names: Sequence[str], top: TopK) -> dict[str, pl.Series]:
    """Each hit's image (its position, for ordering), file name and score, image by image."""
    batch, k = top.ids.shape
    image = np.repeat(np.arange(batch), k)
    return {"image": pl.Series(image), "file_name": pl.Series(list(names), dtype=pl.String).gather(image),
            "score": pl.Series(top.scores.float().cpu().numpy().ravel(), dtype=pl.Float64)}


def taxon_rows(taxa: pl.DataFrame, first: Sequence[np.ndarray], names: Sequence[str],
               tops: dict[int, TopK], captions: pl.DataFrame | None = None) -> pl.DataFrame:
    """One batch's rows, by image, then rank (kingdom first; nearest ``captions`` last), then score.

    ``taxa`` is the index's table (7 ranks, species = epithet, and common name) and ``first[level]``
    each group's first row: a hit at a higher rank shows the names of its first species down to that
    rank, the lower ones empty. ``species`` is the binomial, as in pybioclip.
    """
    parts = []
    for level in sorted(tops):
        ids = tops[level].ids.cpu().numpy()
        rows = ids if level == SPECIES else first[level][ids]
        at_species = level == SPECIES
        binomial = pl.concat_str(["genus", "species"], separator=" ", ignore_nulls=True).str.strip_chars()
        parts.append(taxa[rows.ravel()].select(
            *[pl.col(c) if i <= level else _EMPTY.alias(c) for i, c in enumerate(RANKS[:6])],
            (pl.col("species") if at_species else _EMPTY).alias("species_epithet"),
            (binomial if at_species else _EMPTY).alias("species"),
            (pl.col("common_name") if at_species else _EMPTY).alias("common_name"),
        ).with_columns(**_per_hit(names, tops[level]), rank=pl.lit(RANKS[level])))
    columns = ["image", *TAXON_COLUMNS]
    if captions is not None:
        parts = [p.with_columns(caption=_EMPTY) for p in parts] + [captions]
        columns.append("caption")
    frame = pl.concat([p.select(columns) for p in parts])
    return frame.sort("image", maintain_order=True).drop("image")


def caption_rows(names: Sequence[str], top: TopK, captions: Sequence[str]) -> pl.DataFrame:
    """Nearest trait captions (``top.ids`` index ``captions``) as rows of a prediction table: taxon
    fields empty, ``rank`` ``caption``; with an ``image`` column for :func:`taxon_rows` to order by."""
    hits = _per_hit(names, top)
    return pl.DataFrame(hits).select(
        "image", "file_name", *[_EMPTY.alias(c) for c in TAXON_COLUMNS[1:-2]], "score",
        rank=pl.lit("caption"), caption=_pick(captions, top))


def label_rows(names: Sequence[str], top: TopK, shown: Sequence[str]) -> pl.DataFrame:
    """Custom-label (or bin) rows ``file_name, classification, score``, by image then score."""
    hits = _per_hit(names, top)
    return pl.DataFrame({"file_name": hits["file_name"], "classification": _pick(shown, top), "score": hits["score"]})


def _pick(texts: Sequence[str], top: TopK) -> pl.Series:
    """The texts of the hits, in hit order (a few per image, from a list that may be long)."""
    return pl.Series([texts[i] for i in top.ids.flatten().tolist()], dtype=pl.String)
