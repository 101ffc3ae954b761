"""Where samples come from: TreeOfLife shards or a catalog with image paths, plus wiki text.

Work is split into *units*, each with its own output files: one per input
shard, or one per fixed-size slice of a catalog. Units stream their samples,
so memory follows the batch, not the unit. Wiki descriptions are looked up
per batch from a uuid-sorted table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from biocap_core import schemas
from biocap_core.descriptions import per_uuid_descriptions
from biocap_core.errors import EmptyTaxonError, SchemaError, ShardError
from biocap_core.shards import expand_urls, iter_samples, read_sizes
from biocap_core.taxonomy import Taxon, class_of_tag, tol_names


@dataclass(frozen=True)
class Sample:
    """One image and what its prompt needs. ``problem`` says why there is no usable image."""

    uuid: str
    image: bytes | None
    display_name: str
    scientific_name: str
    klass: str
    problem: str | None = None


class Unit(Protocol):
    #: Output file stem, unique within a run.
    name: str
    #: Recorded in the ``shard`` column.
    label: str
    #: Number of samples, when known in advance (for the progress bar).
    expected: int | None

    def samples(self) -> Iterator[Sample]: ...


def _text(sample: dict, member: str) -> str:
    value = sample.get(member)
    if value is None:
        return ""
    return (
        value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    ).strip()


def names(tol: dict[str, str]) -> tuple[str, str]:
    """(display name, scientific name) from TreeOfLife name members (``common_name`` ...).

    The display name is ``common_name`` as given: TreeOfLife writers fill it with
    :attr:`biocap_core.taxonomy.Taxon.common`, which already falls back to the scientific,
    then the taxonomic name. The scientific name falls back to the taxonomic one (no genus).
    """
    return tol["common_name"], tol["scientific_name"] or tol["taxonomic_name"]


_NAME_MEMBERS = ("common_name", "scientific_name", "taxonomic_name")


@dataclass(frozen=True)
class ShardUnit:
    """One TreeOfLife-layout webdataset shard."""

    url: str
    name: str
    expected: int | None = None

    @property
    def label(self) -> str:
        return Path(self.url).name

    def samples(self) -> Iterator[Sample]:
        for raw in iter_samples(self.url):
            uuid = raw["__key__"]
            display, scientific = names({k: _text(raw, f"{k}.txt") for k in _NAME_MEMBERS})
            image = raw.get("jpg")
            yield Sample(
                uuid=uuid,
                image=image,
                display_name=display,
                scientific_name=scientific,
                klass=class_of_tag(_text(raw, "taxontag.txt")),
                problem=None if image else f"no jpg member: sample {uuid!r} of {self.url}",
            )


def shard_units(pattern: str) -> list[ShardUnit]:
    """Units for a shard pattern (brace expansion, ``::`` between patterns), sorted by path.

    Sample counts come from ``sizes.json`` beside the shards when there is one.
    Two shards with the same file name (``train/`` and ``val/``) would share
    output files, so that is refused.
    """
    urls = sorted(dict.fromkeys(expand_urls(pattern)))
    if not urls:
        raise ShardError(f"no shards match {pattern!r}")
    sizes: dict[Path, dict[str, int]] = {}
    units, seen = [], {}
    for url in urls:
        path = Path(url)
        if path.parent not in sizes:
            try:
                sizes[path.parent] = read_sizes(path.parent)
            except FileNotFoundError:
                sizes[path.parent] = {}
        name = path.name.removesuffix(".tar")
        if name in seen:
            raise ShardError(
                f"{seen[name]} and {url} share the name {name!r}; caption each split into its own"
                " --out"
            )
        seen[name] = url
        units.append(ShardUnit(url, name, sizes[path.parent].get(path.name)))
    return units


@dataclass(frozen=True)
class CatalogUnit:
    """A slice of catalog rows whose ``image_path`` points at image files."""

    rows: pl.DataFrame
    name: str
    image_root: Path
    catalog_path: str

    @property
    def label(self) -> str:
        return self.name

    @property
    def expected(self) -> int:
        return self.rows.height

    def samples(self) -> Iterator[Sample]:
        for row in self.rows.iter_rows(named=True):
            taxon = Taxon.from_mapping(row)
            path = self.image_root / row["image_path"]
            image, problem = None, None
            try:
                n = tol_names(taxon)
            except (
                EmptyTaxonError
            ):  # BioCLIP's cleaning left no rank: nothing to name in the prompt
                n = dict.fromkeys(_NAME_MEMBERS, "")
                problem = (
                    f"no taxonomic rank left after cleaning ({self.catalog_path} row {row['_row']})"
                )
            display, scientific = names(n)
            try:
                image = None if problem else path.read_bytes()
            except OSError as exc:
                problem = (
                    f"unreadable image file: {path} ({exc.strerror or exc}; "
                    f"{self.catalog_path} row {row['_row']})"
                )
            yield Sample(row["uuid"], image, display, scientific, taxon.klass.lower(), problem)


def catalog_units(
    catalog: pl.DataFrame, source: str, image_root: str | os.PathLike, rows_per_unit: int
) -> list[CatalogUnit]:
    """Fixed-size slices of the catalog rows that have an ``image_path``, in file order.

    Resuming relies on that order: rerun with the same catalog file and ``rows_per_unit``.
    """
    if "image_path" not in catalog.columns:
        raise SchemaError(
            f"{source}: the catalog has no image_path column; caption shards with --shards instead"
        )
    rows = catalog.with_row_index("_row").filter(
        pl.col("image_path").is_not_null() & (pl.col("image_path") != "")
    )
    if rows.height == 0:
        raise SchemaError(f"{source}: no catalog row has an image_path")
    root = Path(image_root)
    return [
        CatalogUnit(
            rows.slice(start, rows_per_unit), f"part-{start // rows_per_unit:06d}", root, source
        )
        for start in range(0, rows.height, rows_per_unit)
    ]


class DescriptionLookup:
    """Per-uuid descriptions, looked up a batch at a time by binary search on sorted uuids."""

    def __init__(self, table: pl.DataFrame):
        usable = table.filter(
            pl.col("description").is_not_null() & (pl.col("description").str.strip_chars() != "")
        )
        usable = usable.unique(subset="uuid", keep="first", maintain_order=True).sort("uuid")
        self._uuids = usable["uuid"]
        self._descriptions = usable["description"]

    def __len__(self) -> int:
        return self._uuids.len()

    def get_many(self, uuids: list[str]) -> list[str | None]:
        if not uuids or not len(self):
            return [None] * len(uuids)
        wanted = pl.Series(uuids, dtype=pl.String)
        index = self._uuids.search_sorted(wanted, side="left").clip(upper_bound=len(self) - 1)
        found = self._uuids.gather(index) == wanted
        descriptions = self._descriptions.gather(index)
        return [d if ok else None for d, ok in zip(descriptions.to_list(), found.to_list())]


def _columns(path: Path) -> list[str]:
    try:
        if path.suffix == ".parquet":
            return pl.scan_parquet(path).collect_schema().names()
        if path.suffix in (".csv", ".tsv"):
            return (
                pl.scan_csv(path, separator="\t" if path.suffix == ".tsv" else ",")
                .collect_schema()
                .names()
            )
    except Exception as exc:  # polars raises several error types for unreadable files
        raise SchemaError(f"{path}: cannot read the columns: {exc}") from exc
    raise SchemaError(f"{path}: unsupported table format {path.suffix!r} (use .parquet or .csv)")


def load_descriptions(
    path: str | os.PathLike, catalog: pl.DataFrame | None = None, catalog_source: str = "catalog"
) -> DescriptionLookup:
    """Wiki descriptions keyed by uuid: a ``uuid, description`` table as it is, or
    species-level descriptions (biocap-wiki's output) joined to the catalog on the 7 ranks."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such file (expected wiki descriptions)")
    columns = _columns(path)
    if "uuid" in columns:
        return DescriptionLookup(schemas.UUID_DESCRIPTIONS.read(path))
    if "content" in columns:
        if catalog is None:
            raise SchemaError(
                f"{path}: species-level descriptions (no uuid column) are joined to images on the 7"
                " ranks; pass --catalog with uuid and rank columns"
            )
        species = (
            pl.read_parquet(path)
            if path.suffix == ".parquet"
            else pl.read_csv(path, infer_schema=False)
        )
        return DescriptionLookup(per_uuid_descriptions(catalog, species))
    raise SchemaError(
        f"{path}: expected uuid + description columns, or species-level binomial + ranks + content;"
        f" has {columns}"
    )
