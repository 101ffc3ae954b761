"""Species lists in, feed tables out."""

import json
from pathlib import Path

import pytest

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_wiki.tables import load_species, read_feed

# ../shared beside the repository root, as the project keeps it
AMBIGUOUS = (
    Path(__file__).resolve().parents[4]
    / "shared"
    / "data"
    / "biocap-original"
    / "wiki_species"
    / "species_binomial_ambiguous.csv"
)


@pytest.mark.skipif(
    not AMBIGUOUS.exists(), reason="the original's species lists are not available here"
)
def test_the_original_ambiguous_list_loads_as_it_is():
    groups = load_species(AMBIGUOUS)
    assert len(groups) == 1444 and sum(len(taxa) for _, taxa in groups) == 2909
    abronia = dict(groups)["Abronia umbellata"]
    assert {t[0] for t in abronia} == {"Animalia", "Plantae"}


def test_bad_species_lists_fail_naming_file_column_and_rows(tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("binomial,kingdom\nA b,Plantae\n")
    with pytest.raises(SchemaError, match=r"missing\.csv.*missing column.*phylum"):
        load_species(missing)
    blank = tmp_path / "blank.csv"
    blank.write_text(
        "binomial,kingdom,phylum,cls,order,family,genus,species\n"
        "A b,K,P,C,O,F,A,b\n  ,K,P,C,O,F,A,c\n"
    )
    with pytest.raises(SchemaError, match=r"blank\.csv.*'binomial'.*\[1\]"):
        load_species(blank)


def test_duplicates_collapse_and_cls_is_accepted(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "binomial,kingdom,phylum,cls,order,family,genus,species\n"
        "A b,K,P,C,O,F,A,b\nA b,K,P,C,O,F,A,b\nA b,K2,P,C,O,F,A,b\nC d,K,P,C,O,F,C,d\n"
    )
    assert load_species(path) == [
        ("A b", [("K", "P", "C", "O", "F", "A", "b"), ("K2", "P", "C", "O", "F", "A", "b")]),
        ("C d", [("K", "P", "C", "O", "F", "C", "d")]),
    ]


def test_read_feed_splits_validates_and_keeps_the_last_duplicate(tmp_path):
    ranks = {
        "kingdom": "K",
        "phylum": "P",
        "class": "C",
        "order": "O",
        "family": "F",
        "genus": "A",
        "species": "b",
    }
    rows = [
        {"binomial": "A b", **ranks, "reason": "request failed", "detail": "HTTP 503"},
        {
            "binomial": "A b",
            **ranks,
            "content": "Text.",
            "title": "A b",
            "pageid": 1,
            "revid": 2,
            "url": "https://w/A_b",
            "section": "lead",
            "fetched_at": "2026-01-02T03:04:05+00:00",
            "license": "CC BY-SA 4.0",
        },
        {
            "binomial": "C d",
            **ranks,
            "genus": "C",
            "species": "d",
            "reason": "not found",
            "detail": "none",
        },
    ]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    descriptions, errors = read_feed(feed)
    assert descriptions.schema == schemas.WIKI_DESCRIPTIONS.polars_schema
    assert descriptions["content"].to_list() == ["Text."]
    assert descriptions["fetched_at"][0].isoformat() == "2026-01-02T03:04:05+00:00"
    assert errors.select("binomial", "reason").rows() == [("C d", "not found")]
    empty_d, empty_e = read_feed(tmp_path / "none.jsonl")
    assert empty_d.height == 0 and empty_e.schema == schemas.WIKI_ERRORS.polars_schema
