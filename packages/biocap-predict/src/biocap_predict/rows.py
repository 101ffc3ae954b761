"""Output rows, with pybioclip's column names (plus ``rank``) so its users' scripts keep working."""

from __future__ import annotations

from biocap_core.taxonomy import RANKS
from biocap_predict.errors import PredictInputError

#: Columns of a tree-of-life prediction, in order.
TAXON_COLUMNS = ("file_name", "kingdom", "phylum", "class", "order", "family", "genus", "species_epithet",
                 "species", "common_name", "score", "rank")
#: Columns of a custom-label or bin prediction.
LABEL_COLUMNS = ("file_name", "classification", "score")
ALL_RANKS = "all"


def parse_rank(rank: str) -> tuple[int, ...]:
    """Rank levels (0 kingdom .. 6 species) a ``--rank`` value asks for; ``all`` is every rank."""
    name = getattr(rank, "value", rank)
    name = str(name).lower()
    if name == ALL_RANKS:
        return tuple(range(len(RANKS)))
    if name not in RANKS:
        raise PredictInputError(f"unknown rank {rank!r}; expected one of {', '.join(RANKS)} or {ALL_RANKS}")
    return (RANKS.index(name),)


def taxon_row(file_name: str, taxon: tuple[str, ...], level: int, score: float) -> dict:
    """One hit at rank ``level``: names down to that rank, the lower ones empty.

    ``taxon`` is (kingdom, phylum, class, order, family, genus, epithet, common name) of the hit's
    first species; ``species`` is the binomial, as in pybioclip.
    """
    row = {"file_name": file_name}
    for i, column in enumerate(RANKS[:6]):
        row[column] = taxon[i] if i <= level else ""
    is_species = level == 6
    row["species_epithet"] = taxon[6] if is_species else ""
    row["species"] = f"{taxon[5]} {taxon[6]}".strip() if is_species else ""
    row["common_name"] = taxon[7] if is_species else ""
    row["score"] = score
    row["rank"] = RANKS[level]
    return row


def caption_row(file_name: str, caption: str, score: float) -> dict:
    """A nearest trait caption, in a prediction table: taxon fields empty, ``rank`` is ``caption``."""
    row = dict.fromkeys(TAXON_COLUMNS, "")
    row.update(file_name=file_name, score=score, rank="caption", caption=caption)
    return row
