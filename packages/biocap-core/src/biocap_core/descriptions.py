"""Species-level descriptions to per-image descriptions.

biocap-wiki writes one description per (binomial, 7-rank taxonomy);
biocap-captions needs one per image uuid. The join is on the full 7-rank
taxonomy (not the binomial), so a hemihomonym such as *Abronia umbellata*
(a lizard and a plant) gives each image the description of its own taxon.
"""

from __future__ import annotations

import polars as pl

from biocap_core import schemas
from biocap_core.taxonomy import RANKS


def _key(df: pl.DataFrame) -> pl.DataFrame:
    """Normalised join key: ranks stripped and lower-cased, nulls as empty strings."""
    return df.with_columns(
        [
            pl.col(r).fill_null("").str.strip_chars().str.to_lowercase().alias(f"_k_{r}")
            for r in RANKS
        ]
    )


def per_uuid_descriptions(catalog: pl.DataFrame, descriptions: pl.DataFrame) -> pl.DataFrame:
    """Join a catalog (uuid + ranks) to species descriptions (ranks + content) on the 7 ranks.

    Returns the ``uuid_descriptions`` table (uuid, description); catalog rows
    without a matching taxon get a null description. Where several
    descriptions share one taxonomy the first is kept.
    """
    catalog = schemas.CATALOG.validate(catalog, source="catalog")
    # species-level: binomial, the 7 ranks and content (biocap-wiki's output or the original's
    # merge)
    descriptions = schemas.SPECIES_LIST.validate(
        descriptions, source="descriptions", require=["content"]
    )
    keys = [f"_k_{r}" for r in RANKS]
    species = (
        _key(descriptions)
        .unique(subset=keys, keep="first", maintain_order=True)
        .select(*keys, pl.col("content").alias("description"))
    )
    joined = _key(catalog).join(species, on=keys, how="left", maintain_order="left")
    return schemas.UUID_DESCRIPTIONS.validate(joined.select("uuid", "description"))
