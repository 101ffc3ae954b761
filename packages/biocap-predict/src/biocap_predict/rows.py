"""Output rows, with pybioclip's column names (plus ``rank``) so its users' scripts keep working.

A block's rows are made column by column as one polars DataFrame, which polars writes as CSV,
JSONL or parquet without a Python loop per row; ``to_dicts()`` gives pybioclip's list of rows.
Rows and CSV of 2,000 images, CPU time: ``--rank all`` 0.09-0.13 s instead of 0.19-0.32 s with a
dict per row and Python's csv module; ``--rank species`` the same, about 0.05 s (measured).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from biocap_core.taxonomy import GENUS, RANKS, SPECIES
from biocap_predict.errors import PredictInputError
from biocap_predict.scoring import TopK

#: Columns of a tree-of-life prediction row, in order (pybioclip's, plus ``rank``): the ranks above
#: species, then the species' epithet, binomial and common name. The index's own table is core's
#: ``schemas.TAXA`` (the 7 ranks, species as the epithet, and common name).
TAXON_COLUMNS = (
    "file_name",
    *RANKS[:SPECIES],
    "species_epithet",
    "species",
    "common_name",
    "score",
    "rank",
)
_NAMES = TAXON_COLUMNS[1:-2]  # the taxon's names: kingdom .. common_name
#: Columns added to every row of an image with ``--rollup T``: the deepest rank whose best taxon
#: has probability >= T, that taxon's name (a binomial at species) and its probability; empty (and
#: a null score) when not even the kingdom reaches T.
ROLLUP_COLUMNS = ("rollup_rank", "rollup", "rollup_score")
#: Columns that start a row of an observation (several photos of one organism) instead of
#: ``file_name``: its id and its photos, joined by ``;``.
OBSERVATION_COLUMNS = ("observation", "photos")
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
        raise PredictInputError(
            f"unknown rank {rank!r}; expected one of {', '.join(RANKS)} or {ALL_RANKS}"
        )
    return (RANKS.index(name),)


def _per_hit(names: Sequence[str], top: TopK) -> dict[str, pl.Series]:
    """Each hit's image (its position, for ordering), file name and score, image by image."""
    batch, k = top.ids.shape
    image = np.repeat(np.arange(batch), k)
    return {
        "image": pl.Series(image),
        "file_name": pl.Series(list(names), dtype=pl.String).gather(image),
        "score": pl.Series(top.scores.float().cpu().numpy().ravel(), dtype=pl.Float64),
    }


class TaxonNames:
    """The output names of a hit (kingdom .. genus down to its rank, the lower ones empty, then the
    species' epithet, binomial and common name), read from the index's table the first time a row
    is a hit at a rank, and kept: a batch then costs a dictionary look-up per hit, where a polars
    gather of even a few rows costs 0.2-1 ms (measured). What is kept grows with the distinct hits,
    at most the index's rows times the ranks, never with the number of images."""

    def __init__(self, taxa: pl.DataFrame):
        self.taxa, self.known = taxa, {}

    def __call__(self, rows: Sequence[int], levels: Sequence[int]) -> list[tuple[str, ...]]:
        keys = list(zip(rows, levels))
        missing = sorted({r for r, lv in keys if (r, lv) not in self.known})
        if missing:
            table = dict(zip(missing, self.taxa[missing].rows()))
            for row, level in set(keys) - self.known.keys():
                names = table[row]  # (kingdom, ..., genus, epithet, common name)
                ranks = tuple(names[i] if i <= level else "" for i in range(SPECIES))
                epithet, genus = names[SPECIES], names[GENUS]
                species = (
                    (epithet, f"{genus or ''} {epithet or ''}".strip(), names[SPECIES + 1])
                    if level == SPECIES
                    else ("", "", "")
                )
                self.known[row, level] = ranks + species
        return [self.known[k] for k in keys]


def taxon_rows(
    names_of: TaxonNames,
    first: Sequence[np.ndarray],
    names: Sequence[str],
    tops: dict[int, TopK],
    captions: pl.DataFrame | None = None,
    rolled: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One block's rows, by image, then rank (kingdom first; nearest ``captions`` last), then score.

    ``first[level]`` is each group's first row of the index: a hit at a higher rank shows the names
    of its first species down to that rank. ``species`` is the binomial, as in pybioclip.
    ``rolled`` (one row per image, :func:`rollup_frame`) adds its columns to each image's rows.
    """
    levels = sorted(tops)
    # every hit's (image, level, row, score), put in (image, level, hit) order with one stable sort
    # (a rank may have fewer than k groups), then the columns made in one go
    ids = {lv: tops[lv].ids.cpu().numpy() for lv in levels}
    rows = np.concatenate(
        [(ids[lv] if lv == SPECIES else first[lv][ids[lv]]).ravel() for lv in levels]
    )
    scores = np.concatenate([tops[lv].scores.float().cpu().numpy().ravel() for lv in levels])
    level = np.concatenate([np.full(ids[lv].size, lv) for lv in levels])
    image = np.concatenate([np.repeat(np.arange(len(names)), ids[lv].shape[1]) for lv in levels])
    order = np.argsort(image, kind="stable")
    rows, scores, level, image = (
        rows[order].tolist(),
        scores[order],
        level[order].tolist(),
        image[order],
    )
    columns = dict(zip(_NAMES, zip(*names_of(rows, level))))
    frame = pl.DataFrame(
        {
            "file_name": [names[i] for i in image.tolist()],
            **columns,
            "score": pl.Series(scores, dtype=pl.Float64),
            "rank": [RANKS[lv] for lv in level],
        },
        schema_overrides={c: pl.String for c in _NAMES},
    )
    if captions is not None:
        frame = frame.with_columns(image=pl.Series(image), caption=_EMPTY)
        frame = pl.concat([frame, captions.select(frame.columns)])
        frame = frame.sort("image", maintain_order=True)
        image = frame["image"].to_numpy()
        frame = frame.drop("image")
    if rolled is not None:
        frame = frame.with_columns(rolled[image.tolist()])
    return frame


def rollup_frame(
    names_of: TaxonNames,
    first: Sequence[np.ndarray],
    levels: Sequence[int | None],
    ids: Sequence[int],
    scores: Sequence[float | None],
) -> pl.DataFrame:
    """One row per image of :data:`ROLLUP_COLUMNS` from :func:`~biocap_predict.scoring.rollup`'s
    levels, group ids and probabilities."""
    known = [
        (int(first[lv][g]) if lv < SPECIES else int(g), lv)
        for lv, g in zip(levels, ids)
        if lv is not None
    ]
    found = iter(names_of([r for r, _ in known], [lv for _, lv in known]))
    names = []
    for level in levels:
        if level is None:
            names.append("")
            continue
        taxon = next(found)
        names.append(taxon[-2] if level == SPECIES else taxon[level])
    return pl.DataFrame(
        {
            "rollup_rank": ["" if lv is None else RANKS[lv] for lv in levels],
            "rollup": names,
            "rollup_score": pl.Series(scores, dtype=pl.Float64),
        }
    )


def caption_rows(names: Sequence[str], top: TopK, captions: Sequence[str]) -> pl.DataFrame:
    """Nearest trait captions (``top.ids`` index ``captions``) as rows of a prediction table: taxon
    fields empty, ``rank`` ``caption``; with an ``image`` column for :func:`taxon_rows` to order by.
    """
    hits = _per_hit(names, top)
    return pl.DataFrame(hits).select(
        "image",
        "file_name",
        *[_EMPTY.alias(c) for c in _NAMES],
        "score",
        rank=pl.lit("caption"),
        caption=_pick(captions, top),
    )


def label_rows(names: Sequence[str], top: TopK, shown: Sequence[str]) -> pl.DataFrame:
    """Custom-label (or bin) rows ``file_name, classification, score``, by image then score."""
    hits = _per_hit(names, top)
    return pl.DataFrame(
        {
            "file_name": hits["file_name"],
            "classification": _pick(shown, top),
            "score": hits["score"],
        }
    )


def _pick(texts: Sequence[str], top: TopK) -> pl.Series:
    """The texts of the hits, in hit order (a few per image, from a list that may be long)."""
    return pl.Series([texts[i] for i in top.ids.flatten().tolist()], dtype=pl.String)
