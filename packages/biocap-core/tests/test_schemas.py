"""Every real annotation file validates; bad tables fail naming the file, column and rows."""

from __future__ import annotations

import polars as pl
import pytest

from biocap_core import schemas
from biocap_core.errors import SchemaError

REAL_FILES = [
    ("retrieval_annotations/cornell_bird.csv", schemas.RETRIEVAL, 7007),
    ("retrieval_annotations/plantID.csv", schemas.RETRIEVAL, 2349),
    ("inquire_annotations/inquire_queries_test.csv", schemas.INQUIRE_QUERIES, 200),
    ("wiki_and_format_example/format_examples.parquet", schemas.FORMAT_EXAMPLES, 347),
    ("wiki_species/species_binomial_ambiguous.csv", schemas.SPECIES_LIST, 2909),
]


@pytest.mark.parametrize("rel,schema,rows", REAL_FILES)
def test_real_files_validate(original_data, rel, schema, rows):
    df = schema.read(original_data / rel)
    assert df.height == rows
    for column in schema.columns:
        if column.name in df.columns:
            assert df.schema[column.name] == column.dtype


def test_every_real_classification_file_validates(original_data):
    files = sorted((original_data / "classification_annotation").rglob("*.csv"))
    assert len(files) == 15
    for path in files:
        df = schemas.CLASSIFICATION.read(path)
        assert "filepath" in df.columns and df["filepath"].null_count() == 0
        assert "" not in df.columns  # pandas' unnamed index column is dropped


def test_real_queries_keep_supercategories(original_data):
    df = schemas.INQUIRE_QUERIES.read(
        original_data / "inquire_annotations/inquire_queries_test.csv"
    )
    assert df.group_by("supercategory").len().sort("supercategory").rows() == [
        ("Appearance", 66),
        ("Behavior", 67),
        ("Context", 49),
        ("Species", 18),
    ]


def test_ambiguous_species_have_several_taxonomies(original_data):
    df = schemas.SPECIES_LIST.read(original_data / "wiki_species/species_binomial_ambiguous.csv")
    assert df["binomial"].n_unique() == 1444


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(",id,source_url\n0,1,http://x\n")
    with pytest.raises(
        SchemaError, match=r"captions.csv: retrieval table is missing column\(s\) \['captions'\]"
    ):
        schemas.RETRIEVAL.read(path)


def test_bad_values_name_column_and_rows(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        "query_id,query_text,supercategory\n1,a,Species\n2,b,Species\nthree,c,Species\n"
    )
    with pytest.raises(
        SchemaError, match=r"q.csv: column 'query_id'.*Int64.*rows \(0-based\) \[2\]: \['three'\]"
    ):
        schemas.INQUIRE_QUERIES.read(path)


def test_empty_required_values_are_reported(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('id,captions\n1,a\n2,\n3," "\n')
    with pytest.raises(
        SchemaError,
        match=r"column 'captions'.*2 empty value\(s\); first rows \(0-based\): \[1, 2\]",
    ):
        schemas.RETRIEVAL.read(path)


def test_aliases_and_fill(tmp_path):
    df = pl.DataFrame(
        {
            "treeoflife_id": ["u1"],
            "kingdom": ["Animalia"],
            "phylum": [None],
            "cls": ["Aves"],
            "order": ["o"],
            "family": ["f"],
            "genus": ["g"],
            "species": ["s"],
            "common": ["bird"],
        }
    )
    out = schemas.CATALOG.validate(df)
    assert out["uuid"].to_list() == ["u1"] and out["class"].to_list() == ["Aves"]
    assert out["phylum"].to_list() == [""] and out["common_name"].to_list() == ["bird"]


def test_require_adds_columns(tmp_path):
    df = pl.DataFrame({"filepath": ["a.jpg"]})
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['class'\]"):
        schemas.CLASSIFICATION.validate(df, require=["class"])


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(SchemaError, match="no such file"):
        schemas.RETRIEVAL.read(tmp_path / "nope.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="bad.parquet: cannot read"):
        schemas.RETRIEVAL.read(bad)


def test_every_schema_round_trips_its_own_empty_frame(tmp_path):
    for name, schema in schemas.ALL.items():
        path = schemas.write_parquet_atomic(schema.empty(), tmp_path / f"{name}.parquet")
        assert schema.read(path).schema == schema.polars_schema
