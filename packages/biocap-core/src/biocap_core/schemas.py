"""One polars schema per table the toolkit reads or writes.

Every reader goes through :meth:`Schema.read` (or :meth:`Schema.validate` for a
frame already in memory), so a bad file always fails the same way: a
:class:`~biocap_core.errors.SchemaError` naming the file, the column and the
first offending rows. Extra columns are kept, so the original annotation files
load as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from biocap_core.errors import SchemaError
from biocap_core.fileio import atomic_write
from biocap_core.taxonomy import RANKS

_INDEX_COLUMNS = ("", "Unnamed: 0", "__index_level_0__")
_SHOW_ROWS = 5


@dataclass(frozen=True)
class Column:
    """A column: its dtype, whether it must exist, and how nulls are treated.

    ``fill`` replaces nulls after casting (the original's ``fillna('')``);
    ``aliases`` are other names the same column has in published files.
    """

    name: str
    dtype: pl.DataType
    required: bool = True
    nullable: bool = False
    fill: object = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    name: str
    description: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)

    def frame(self, rows: list[dict]) -> pl.DataFrame:
        """Build a frame of this schema from row dicts (missing optional columns become null)."""
        return pl.DataFrame(rows, schema=self.polars_schema, orient="row")

    def read(self, path: str | os.PathLike, require: Iterable[str] = ()) -> pl.DataFrame:
        """Read a CSV or parquet file and validate it; ``require`` adds required columns."""
        return self.validate(read_table(path, self.name), source=path, require=require)

    def validate(
        self, df: pl.DataFrame, source: str | os.PathLike = "<frame>", require: Iterable[str] = ()
    ) -> pl.DataFrame:
        """Check columns and dtypes; return the frame with schema columns cast and extras kept."""
        df = _drop_index_column(df)
        renames = {}
        for c in self.columns:
            if c.name not in df.columns:
                for alias in c.aliases:
                    if alias in df.columns and alias not in renames:
                        renames[alias] = c.name
                        break
        if renames:
            df = df.rename(renames)
        required = [c.name for c in self.columns if c.required] + [r for r in require]
        missing = [name for name in dict.fromkeys(required) if name not in df.columns]
        if missing:
            raise SchemaError(
                f"{source}: {self.name} table is missing column(s) {missing}; it has {df.columns}"
            )
        casts = []
        for c in self.columns:
            if c.name not in df.columns:
                continue
            casts.append(_cast_column(df, c, source, self.name))
        df = df.with_columns(casts)
        for c in self.columns:
            if c.name in df.columns and not c.nullable and (c.required or c.name in require):
                empty = pl.col(c.name).is_null()
                if c.dtype == pl.String:
                    empty = empty | (pl.col(c.name).str.strip_chars() == "")
                bad = df.with_row_index("_row").filter(empty)
                if bad.height:
                    raise SchemaError(
                        f"{source}: column {c.name!r} of the {self.name} table has {bad.height}"
                        " empty value(s); first rows (0-based):"
                        f" {bad['_row'].head(_SHOW_ROWS).to_list()}"
                    )
        return df


def read_table(path: str | os.PathLike, what: str = "table") -> pl.DataFrame:
    """A CSV/TSV (every column as text), parquet or JSONL file as it is, before validation;
    :class:`SchemaError` naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such file (expected a {what} table)")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix in (".csv", ".tsv"):
            separator = "\t" if path.suffix == ".tsv" else ","
            return pl.read_csv(path, infer_schema=False, separator=separator)
        if path.suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(path, infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise SchemaError(f"{path}: cannot read as a {what} table: {exc}") from exc
    raise SchemaError(
        f"{path}: unsupported table format {path.suffix!r} (use .csv, .parquet or .jsonl)"
    )


def _drop_index_column(df: pl.DataFrame) -> pl.DataFrame:
    """Drop the unnamed leading index column that pandas ``to_csv`` writes."""
    if df.width and df.columns[0] in _INDEX_COLUMNS:
        return df.drop(df.columns[0])
    return df


def _cast_column(df: pl.DataFrame, c: Column, source, table: str) -> pl.Expr:
    series = df[c.name]
    if series.dtype != c.dtype:
        cast = _cast(series, c.dtype)
        bad = (cast.is_null() & series.is_not_null() & (series.cast(pl.String) != "")).arg_true()
        if len(bad):
            rows = bad.head(_SHOW_ROWS).to_list()
            values = [series[i] for i in rows]
            raise SchemaError(
                f"{source}: column {c.name!r} of the {table} table should be {c.dtype}; "
                f"bad values in rows (0-based) {rows}: {values}"
            )
        series = cast
    expr = pl.lit(series).alias(c.name)
    if c.fill is not None:
        expr = expr.fill_null(c.fill)
    return expr


def _cast(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    if dtype == pl.Boolean and series.dtype == pl.String:
        lowered = series.str.strip_chars().str.to_lowercase()
        return (
            pl.select(
                pl.when(lowered.is_in(["true", "1", "yes"]))
                .then(True)
                .when(lowered.is_in(["false", "0", "no"]))
                .then(False)
                .otherwise(None)
            )
            .to_series()
            .alias(series.name)
        )
    if isinstance(dtype, pl.Datetime) and series.dtype == pl.String:
        return series.str.to_datetime(
            time_unit=dtype.time_unit, time_zone=dtype.time_zone, strict=False
        )
    if series.dtype == pl.String and dtype.is_numeric():
        series = series.str.strip_chars().replace("", None)
    return series.cast(dtype, strict=False)


def _ranks(required: bool, fill: object = None, class_name: str = "class", class_alias=("cls",)):
    cols = []
    for rank in RANKS:
        name = class_name if rank == "class" else rank
        aliases = class_alias if rank == "class" else ()
        cols.append(
            Column(
                name,
                pl.String,
                required=required,
                nullable=fill is not None,
                fill=fill,
                aliases=aliases,
            )
        )
    return tuple(cols)


S, I64, F64, B = pl.String, pl.Int64, pl.Float64, pl.Boolean
UTC = pl.Datetime("us", "UTC")

#: The image-location columns of the TreeOfLife-10M download's ``metadata/catalog.csv``.
TOL_SOURCE_COLUMNS = (
    "eol_content_id",
    "eol_page_id",
    "inat21_filename",
    "inat21_cls_name",
    "inat21_cls_num",
    "bioscan_part",
    "bioscan_filename",
)

CATALOG = Schema(
    "catalog",
    "One row per TreeOfLife image: uuid, the 7 ranks, names, split and shard.",
    (Column("uuid", S, aliases=("treeoflife_id", "__key__")),)
    + _ranks(required=True, fill="")
    + (
        Column("common_name", S, required=False, nullable=True, fill="", aliases=("common",)),
        Column("split", S, required=False, nullable=True),
        Column("shard", S, required=False, nullable=True),
        Column("image_path", S, required=False, nullable=True),
    )
    # where the TreeOfLife-10M download's metadata/catalog.csv says each image is
    + tuple(Column(name, S, required=False, nullable=True) for name in TOL_SOURCE_COLUMNS),
)

SHARD_ERRORS = Schema(
    "shard_errors",
    "Catalog rows the shard builder could not write (errors.parquet), with the reason.",
    (
        Column("uuid", S),
        Column("split", S),
        Column("source", S),
        Column("path", S, nullable=True),
        Column("reason", S),
    ),
)

CAPTIONS = Schema(
    "captions",
    "Generated trait captions, one row per uuid, with provenance and quality flags.",
    (
        Column("uuid", S),
        Column("caption", S),
        Column("model", S),
        Column("prompt_version", S),
        Column("finish_reason", S, nullable=True),
        Column("n_tokens", I64, nullable=True),
        Column("wiki_used", B),
        Column("created_at", UTC),
        Column("shard", S, required=False, nullable=True),
        Column("word_count", I64, required=False, nullable=True),
        Column("names_species", B, required=False, nullable=True),
        Column("flags", S, required=False, nullable=True),
    ),
)

CAPTION_ERRORS = Schema(
    "caption_errors",
    "Samples that got no caption, with the reason.",
    (
        Column("uuid", S),
        Column("shard", S),
        Column("reason", S),
        Column("created_at", UTC),
    ),
)

SPECIES_LIST = Schema(
    "species_list",
    "Species to look up on Wikipedia: binomial plus the 7 ranks (the original's species CSVs).",
    (Column("binomial", S),) + _ranks(required=True, fill=""),
)

WIKI_DESCRIPTIONS = Schema(
    "wiki_descriptions",
    "Species-level Wikipedia descriptions with provenance; one row per (binomial, taxonomy).",
    (Column("binomial", S),)
    + _ranks(required=True, fill="")
    + (
        Column("content", S),
        Column("title", S),
        Column("pageid", I64),
        Column("revid", I64, nullable=True),
        Column("url", S),
        Column("section", S),
        Column("fetched_at", UTC),
        Column("license", S),
    ),
)

WIKI_ERRORS = Schema(
    "wiki_errors",
    "Species the wiki spider could not describe, with the reason.",
    (Column("binomial", S),)
    + _ranks(required=True, fill="")
    + (Column("reason", S), Column("detail", S, required=False, nullable=True)),
)

UUID_DESCRIPTIONS = Schema(
    "uuid_descriptions",
    "Per-image descriptions keyed by uuid (the HF uuid_caption_description.parquet layout).",
    (
        Column("uuid", S),
        Column("description", S, nullable=True),
        Column("caption", S, required=False, nullable=True),
    ),
)

FORMAT_EXAMPLES = Schema(
    "format_examples",
    "Example captions per taxonomic class, used in the caption prompt (14 of the original's 347 are"
    " empty).",
    (Column("class", S), Column("description", S, nullable=True)),
)

TAXA = Schema(
    "taxa",
    "One row per taxon of a prediction index: the 7 ranks (species = epithet) and the common name.",
    _ranks(required=True, fill="", class_alias=("cls",))
    + (Column("common_name", S, required=False, nullable=True, fill="", aliases=("common",)),),
)

CLASSIFICATION = Schema(
    "classification",
    "Zero-shot annotations: filepath plus a class label and/or the 7 ranks and common name.",
    (
        Column("filepath", S),
        Column("class", S, required=False, nullable=True),
    )
    + _ranks(required=False, fill="", class_name="cls", class_alias=())
    + (Column("common_name", S, required=False, nullable=True, fill=""),),
)

RETRIEVAL = Schema(
    "retrieval",
    "Image-caption pairs: images are {id}.jpg; captions start with the species name.",
    (
        Column("id", S),
        Column("captions", S),
        Column("source_url", S, required=False, nullable=True),
        Column("md5", S, required=False, nullable=True),
    ),
)

INQUIRE_QUERIES = Schema(
    "inquire_queries",
    "INQUIRE queries with their supercategory.",
    (
        Column("query_id", I64),
        Column("query_text", S),
        Column("supercategory", S),
        Column("category", S, required=False, nullable=True),
        Column("iconic_group", S, required=False, nullable=True),
    ),
)

INQUIRE_RERANK = Schema(
    "inquire_rerank",
    "INQUIRE-Rerank rows: one (query, candidate image, relevance) per row.",
    (
        Column("query", S),
        Column("filepath", S, aliases=("image_path",)),
        Column("relevant", I64),
        Column("inat24_image_id", I64, required=False, nullable=True),
        Column("supercategory", S, required=False, nullable=True),
    ),
)

TOY_ATTRIBUTES = Schema(
    "toy_attributes",
    "The toy tree of life's images as drawn: species traits, life stage, background, tilt, and "
    "the caption with how many of its trait phrases are wrong or missing (null where none).",
    (
        Column("uuid", S),
        Column("split", S),
        Column("scientific_name", S),
        Column("plan", S),
        Column("colour", S),
        Column("shape", S),
        Column("pattern", S),
        Column("pattern_colour", S),
        Column("marks", I64),
        Column("life_stage", S),
        Column("background", S),
        Column("tilt", S),
        Column("caption", S, nullable=True),
        Column("caption_errors", I64, nullable=True),
    ),
)

EVAL_RESULTS = Schema(
    "eval_results",
    "One metric of one model on one benchmark.",
    (
        Column("model", S),
        Column("benchmark", S),
        Column("task", S),
        Column("metric", S),
        Column("value", F64),
    ),
)

ALL: dict[str, Schema] = {
    s.name: s
    for s in (
        CATALOG,
        CAPTIONS,
        CAPTION_ERRORS,
        SHARD_ERRORS,
        SPECIES_LIST,
        TAXA,
        WIKI_DESCRIPTIONS,
        WIKI_ERRORS,
        UUID_DESCRIPTIONS,
        FORMAT_EXAMPLES,
        CLASSIFICATION,
        RETRIEVAL,
        INQUIRE_QUERIES,
        INQUIRE_RERANK,
        TOY_ATTRIBUTES,
        EVAL_RESULTS,
    )
}


def write_parquet_atomic(df: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write parquet through a temp file and rename, so readers never see half a file."""
    return atomic_write(path, df.write_parquet)
