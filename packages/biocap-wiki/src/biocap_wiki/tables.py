"""Tables in and out of the spider: the species list, and the feed as parquet.

The input is the original's species CSV layout (``binomial`` and the seven
ranks; ``cls`` is accepted for ``class``), read through biocap-core's
``species_list`` schema so a bad file fails with its name, column and rows.
The spider's JSON-lines feed mixes descriptions and error rows; :func:`read_feed`
splits it into the ``wiki_descriptions`` and ``wiki_errors`` tables.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_core.taxonomy import RANKS
from biocap_wiki.resolve import RankValues

KEY = ("binomial",) + RANKS


def load_species(path: str | os.PathLike) -> list[tuple[str, list[RankValues]]]:
    """Read a species list and group it: ``[(binomial, [taxonomy, ...]), ...]`` in file order.

    Repeated (binomial, taxonomy) rows count once; a binomial with several
    taxonomies is ambiguous and each of its taxonomies gets its own outcome.
    """
    df = schemas.SPECIES_LIST.read(path)
    df = df.with_columns(pl.col(c).str.strip_chars() for c in KEY)
    empty = df.with_row_index("_row").filter(pl.col("binomial") == "")
    if empty.height:
        raise SchemaError(
            f"{path}: column 'binomial' is blank in {empty.height} row(s); "
            f"first rows (0-based): {empty['_row'].head(5).to_list()}"
        )
    groups: dict[str, list[RankValues]] = {}
    for row in df.select(KEY).unique(maintain_order=True).iter_rows():
        groups.setdefault(row[0], []).append(tuple(row[1:]))
    return list(groups.items())


def fingerprint(species: list[tuple[str, list[RankValues]]]) -> str:
    """A digest of a grouped species list, to refuse resuming a job with another list."""
    digest = hashlib.sha256()
    for binomial, taxa in species:
        digest.update(repr((binomial, taxa)).encode())
    return digest.hexdigest()


def read_feed(path: str | os.PathLike) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a spider feed (JSON lines) into ``(descriptions, errors)`` frames.

    Rows carrying a ``reason`` are errors. Should a hard-killed job have left a
    (binomial, taxonomy) twice, its last row wins.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return schemas.WIKI_DESCRIPTIONS.empty(), schemas.WIKI_ERRORS.empty()
    df = pl.read_ndjson(path, infer_schema_length=None)
    if "reason" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("reason"))
    df = df.unique(subset=list(KEY), keep="last", maintain_order=True)
    described = df.filter(pl.col("reason").is_null())
    failed = df.filter(pl.col("reason").is_not_null())
    descriptions = (
        schemas.WIKI_DESCRIPTIONS.validate(
            described.select(schemas.WIKI_DESCRIPTIONS.column_names), source=path
        )
        if described.height
        else schemas.WIKI_DESCRIPTIONS.empty()
    )
    errors = (
        schemas.WIKI_ERRORS.validate(failed.select(schemas.WIKI_ERRORS.column_names), source=path)
        if failed.height
        else schemas.WIKI_ERRORS.empty()
    )
    return descriptions, errors
