"""From a catalog to a plan: which image goes into which shard, in which order.

Two kinds of catalog are read, both with polars and validated with :data:`schemas.CATALOG` (a bad
row is a :class:`SchemaError` naming the file, column and rows):

* the TreeOfLife-10M download's ``metadata/catalog.csv``, whose ``eol_*``, ``inat21_*`` and
  ``bioscan_*`` columns say where each image is (:func:`tol_locations`);
* a catalog of one's own, with an ``image_path`` column (relative to an image root, or absolute).

Samples are assigned to shards by a seeded permutation: each split's rows are sorted by a 64-bit
keyed hash of ``(seed, uuid)``, and shard ``k`` takes positions ``k*shard_size`` onwards. The order
depends only on the ids, the seed and the shard size, so every shard mixes sources and species and
the output never depends on the row order of the catalog, the worker count or a resume.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_core.taxonomy import RANKS, Taxon

TOL_SOURCES = ("eol", "inat21", "bioscan")
#: The column the own-catalog path reads image paths from.
PATH_COLUMN = "image_path"
#: Columns a plan keeps per sample (besides ``shard`` and ``pos``).
PLAN_COLUMNS = ("uuid", "source", "path", *RANKS, "common_name", "caption")
_CONTENT_ID_FILE = re.compile(r"^(\d+)_(\d+)_eol")


@dataclass(frozen=True)
class Inputs:
    """What the builder reads. ``eol``/``inat21``/``bioscan`` are the download's folders (rows of a
    source whose folder is not given are counted and left out); ``image_root`` is where an own
    catalog's relative ``image_path`` values start (default: the catalog's folder)."""

    catalog: Path
    eol: Path | None = None
    inat21: Path | None = None
    bioscan: Path | None = None
    image_root: Path | None = None
    key_column: str | None = None
    captions: Path | None = None
    exclude: tuple[Path, ...] = field(default_factory=tuple)

    def folders(self) -> dict[str, Path | None]:
        return {"eol": self.eol, "inat21": self.inat21, "bioscan": self.bioscan}


def key64(ids: list[str] | pl.Series, seed: int | None = None) -> np.ndarray:
    """A stable 64-bit hash per id (keyed by ``seed`` when given): blake2b, not polars' ``hash``,
    whose values may change between polars versions. A Series is hashed in slices, so a 10M-row
    column never becomes one list of Python strings."""
    if isinstance(ids, pl.Series):
        step = 100_000
        parts = [key64(ids.slice(at, step).to_list(), seed) for at in range(0, len(ids), step)]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    salt = b"" if seed is None else f"{seed}:".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def read_catalog(inputs: Inputs) -> tuple[pl.DataFrame, bool]:
    """The catalog with ``uuid``, ``source``, ``path``, the ranks, ``common_name`` and ``split``
    (own catalogs without one: all ``train``); and whether it is the TreeOfLife-10M download's."""
    df = schemas.read_table(inputs.catalog, "catalog")
    if inputs.key_column:
        if inputs.key_column not in df.columns:
            raise SchemaError(
                f"{inputs.catalog}: --key-column {inputs.key_column!r} is not a column; "
                f"it has {df.columns}"
            )
        df = df.drop(
            [c for c in ("uuid", "treeoflife_id") if c in df.columns and c != inputs.key_column]
        )
        df = df.rename({inputs.key_column: "uuid"})
    own = PATH_COLUMN in df.columns
    require = [PATH_COLUMN] if own else list(schemas.TOL_SOURCE_COLUMNS)
    df = schemas.CATALOG.validate(df, source=inputs.catalog, require=require)
    if "split" not in df.columns or own and df["split"].null_count() == df.height:
        df = df.with_columns(split=pl.lit("train"))
    df = df.with_columns(pl.col("split").fill_null("train"))
    if "common_name" not in df.columns:
        df = df.with_columns(common_name=pl.lit(""))
    dup = df.with_row_index("_row").filter(pl.struct("uuid", "split").is_duplicated())
    if dup.height:
        raise SchemaError(
            f"{inputs.catalog}: {dup.height} rows repeat an id within a split; first rows "
            f"(0-based): {dup['_row'].head(5).to_list()}, ids {dup['uuid'].head(3).to_list()}"
        )
    df = own_locations(df, inputs) if own else tol_locations(df, inputs)
    keep = ["uuid", "split", "source", "path", *RANKS, "common_name"]
    return df.select(keep + (["eol_content_id"] if not own else [])), not own


def own_locations(df: pl.DataFrame, inputs: Inputs) -> pl.DataFrame:
    root = str((inputs.image_root or inputs.catalog.parent).resolve())
    path = pl.col(PATH_COLUMN)
    absolute = pl.when(path.str.starts_with("/")).then(path).otherwise(pl.lit(root + "/") + path)
    return df.with_columns(source=pl.lit("file"), path=absolute)


def tol_locations(df: pl.DataFrame, inputs: Inputs) -> pl.DataFrame:
    """``source`` (eol, inat21 or bioscan; null for a row with none) and, for the file sources,
    ``path``: ``inat21/<cls_num:05d>_<cls_name>/<filename>`` (the iNat21 ``train/`` class folders)
    and ``bioscan/part<part>/<filename>``. EOL images are found by id in the ``image_set`` tars."""
    given = lambda c: pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "")  # noqa: E731
    source = (
        pl.when(given("eol_content_id"))
        .then(pl.lit("eol"))
        .when(given("inat21_filename"))
        .then(pl.lit("inat21"))
        .when(given("bioscan_filename"))
        .then(pl.lit("bioscan"))
    )
    inat = str(inputs.inat21.resolve()) if inputs.inat21 else ""
    bioscan = str(inputs.bioscan.resolve()) if inputs.bioscan else ""
    cls_num = pl.col("inat21_cls_num").str.strip_chars().str.replace(r"\.0$", "").str.zfill(5)
    path = (
        pl.when(pl.col("source") == "inat21")
        .then(
            pl.concat_str(
                pl.lit(inat + "/"),
                cls_num,
                pl.lit("_"),
                pl.col("inat21_cls_name"),
                pl.lit("/"),
                pl.col("inat21_filename"),
            )
        )
        .when(pl.col("source") == "bioscan")
        .then(
            pl.concat_str(
                pl.lit(bioscan + "/part"),
                pl.col("bioscan_part").str.replace(r"\.0$", ""),
                pl.lit("/"),
                pl.col("bioscan_filename"),
            )
        )
    )
    return df.with_columns(source=source).with_columns(path=path)


def read_exclusions(paths: tuple[Path, ...]) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """(ids, (genus, epithet) names, EOL content ids) to leave out, from text files (one entry a
    line) or JSON (a list, or a dict whose keys are entries and whose list values are image paths,
    as the Rare Species files). An entry is an id, a "Genus species" name, a hyphenated rank key
    ending in genus and species, or an EOL file name ``<content_id>_<page_id>_eol...``; names are
    compared with each row's genus and epithet after BioCLIP's cleaning, case-insensitively."""
    entries: list[str] = []
    for path in paths:
        if not path.is_file():
            raise SchemaError(f"{path}: no such --exclude file")
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            items = data.items() if isinstance(data, dict) else ((x, None) for x in data)
            for key, value in items:
                entries.append(str(key))
                if isinstance(value, list):
                    entries += [str(v) for v in value]
        else:
            entries += [
                line.strip()
                for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
    ids, names, content_ids = set(), set(), set()
    for entry in entries:
        base = entry.rsplit("/", 1)[-1]
        if match := _CONTENT_ID_FILE.match(base):
            content_ids.add(match.group(1))
        elif " " in entry.strip():
            genus, epithet = entry.split()[:2]
            names.add(_cleaned_name(genus, epithet))
        elif entry.count("-") >= 2 and not _looks_like_uuid(entry):
            genus, epithet = entry.split("-")[-2:]
            names.add(_cleaned_name(genus, epithet))
        else:
            ids.add(base.split(".")[0])
    return ids, names, content_ids


def _looks_like_uuid(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", text))


def _cleaned_name(genus: str, species: str) -> tuple[str, str]:
    clean = Taxon(genus=genus, species=species).cleaned
    return clean.genus.lower(), clean.species.lower()


def excluded(df: pl.DataFrame, paths: tuple[Path, ...]) -> pl.Series:
    """Which rows the ``--exclude`` files name (see :func:`read_exclusions`)."""
    ids, names, content_ids = read_exclusions(paths)
    hit = df["uuid"].is_in(list(ids))
    if "eol_content_id" in df.columns and content_ids:
        hit = hit | df["eol_content_id"].is_in(list(content_ids)).fill_null(False)
    if names:
        pairs = df.select("genus", "species").unique()
        cleaned = [_cleaned_name(g, s) in names for g, s in pairs.iter_rows()]
        pairs = pairs.with_columns(_hit=pl.Series(cleaned, dtype=pl.Boolean))
        hit = (
            hit
            | df.select("genus", "species").join(
                pairs, on=["genus", "species"], how="left", maintain_order="left"
            )["_hit"]
        )
    return hit


def read_captions(path: Path) -> pl.DataFrame:
    """A ``uuid``, ``caption`` table (TreeOfLife-10M-Captions' ``uuid_caption_description.parquet``,
    or any); rows with an empty caption are dropped."""
    df = schemas.read_table(path, "captions")
    if "description" not in df.columns:  # any uuid, caption table will do
        df = df.with_columns(description=pl.lit(None, dtype=pl.String))
    df = schemas.UUID_DESCRIPTIONS.validate(df, source=path, require=["caption"])
    return (
        df.select("uuid", "caption")
        .filter(pl.col("caption").str.strip_chars() != "")
        .unique("uuid")
    )
