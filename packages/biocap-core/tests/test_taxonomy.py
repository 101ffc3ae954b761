"""Text formats: byte-identical to BioCLIP/BioCAP, and taxonTag round trips."""

from __future__ import annotations

import csv
import string

import pytest
from hypothesis import assume, given, strategies as st

from biocap_core import schemas
from biocap_core.errors import SchemaError, TaxonParseError
from biocap_core.taxonomy import (
    OPENAI_TEMPLATES,
    RANKS,
    TEMPLATES,
    Taxon,
    class_of_tag,
    label_text,
    label_texts,
    parse_taxon_tag,
    tol_names,
    tol_texts,
)

GOLDFINCH = Taxon("animalia", "chordata", "aves", "passeriformes", "fringillidae", "spinus", "Tristis",
                  "American Goldfinch")


def test_tol_texts_are_byte_identical_to_the_shard_writer():
    texts = tol_texts(GOLDFINCH)
    taxonomic = "Animalia Chordata Aves Passeriformes Fringillidae Spinus tristis"
    tag = ("kingdom Animalia phylum Chordata class Aves order Passeriformes family Fringillidae "
           "genus Spinus species tristis")
    assert texts == {
        "sci": "a photo of Spinus tristis.",
        "com": "a photo of American Goldfinch.",
        "taxon": f"a photo of {taxonomic}.",
        "taxonTag": f"a photo of {tag}.",
        "sci_com": "a photo of Spinus tristis with common name American Goldfinch.",
        "taxon_com": f"a photo of {taxonomic} with common name American Goldfinch.",
        "taxonTag_com": f"a photo of {tag} with common name American Goldfinch.",
    }
    assert tol_names(GOLDFINCH) == {"scientific_name": "Spinus tristis", "taxonomic_name": taxonomic,
                                    "common_name": "American Goldfinch"}


def test_tol_texts_drop_empty_ranks_and_fall_back_for_common_name():
    taxon = Taxon("plantae", "", "magnoliopsida", "", "rosaceae", "rosa", "")
    texts = tol_texts(taxon)
    assert texts["taxon"] == "a photo of Plantae Magnoliopsida Rosaceae Rosa."
    assert texts["taxonTag"] == "a photo of kingdom Plantae class Magnoliopsida family Rosaceae genus Rosa."
    # no common name: falls back to the scientific name ...
    assert texts["com"] == "a photo of Rosa."
    assert texts["taxon_com"].endswith(" with common name Rosa.")
    # ... then to the taxonomic name when there is no genus or species
    assert Taxon("fungi", "basidiomycota").common == "Fungi Basidiomycota"


def test_eval_labels_follow_naming_eval_including_its_double_spaces():
    row = Taxon("animalia", "chordata", "", "carnivora", "felidae", "", "", "")
    assert label_text(row, "taxon") == "Animalia Chordata  Carnivora Felidae  "
    assert label_text(row, "sci") is None
    assert label_text(Taxon(genus="Puma", species="Concolor"), "taxon") == "Puma concolor"
    assert label_text(GOLDFINCH, "sci_com") == "Spinus tristis with common name American Goldfinch"
    assert label_text(Taxon(genus="puma", species="concolor"), "sci_com") == "Puma concolor"
    assert label_text(GOLDFINCH, "asis", asis="Goldfinch (male)") == "Goldfinch (male)"


def test_81_templates_start_with_a_photo_of():
    assert len(TEMPLATES) == 81
    assert TEMPLATES[0] == "a photo of {}."
    assert TEMPLATES[1] == "a bad photo of a {}."
    assert all(t.count("{}") == 1 for t in TEMPLATES)
    assert TEMPLATES[1:] == OPENAI_TEMPLATES and len(set(OPENAI_TEMPLATES)) == 80


_PLACEHOLDERS = ("unknown", "pleasehelp")  # cleaned away (see test_tol_cleaning.py)
_WORD = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=10).filter(lambda w: w not in _PLACEHOLDERS)
_KEYWORDS = {"kingdom", "phylum", "class", "order", "family", "genus", "species", "with", "common", "name"}


@st.composite
def taxa(draw):
    ranks = [draw(st.one_of(st.just(""), _WORD)) for _ in range(6)]
    species = draw(st.one_of(st.just(""), _WORD.filter(lambda w: w not in _KEYWORDS)))
    if not any(ranks) and not species:
        ranks[0] = "animalia"
    common = draw(st.one_of(st.just(""), st.lists(_WORD, min_size=1, max_size=3).map(" ".join)))
    return Taxon(*ranks, species, common_name=common)


@given(taxa())
def test_taxon_tag_round_trip(taxon):
    texts = tol_texts(taxon)
    parsed = parse_taxon_tag(texts["taxonTag"])
    assert [(rank, value) for rank, value in zip(RANKS, parsed.ranks()) if value] == taxon.tagged()
    assert tol_texts(parsed)["taxonTag"] == texts["taxonTag"]
    with_common = parse_taxon_tag(texts["taxonTag_com"])
    assert with_common.ranks() == parsed.ranks()
    assert with_common.common_name == taxon.common


@given(taxa())
def test_formats_never_leave_double_spaces_in_training_texts(taxon):
    assume(taxon.scientific)  # with no genus or species the original writes "a photo of  with ..." too
    for text in tol_texts(taxon).values():
        assert "  " not in text and text.endswith(".")


@pytest.mark.parametrize("bad", ["", "a photo of a cat.", "kingdomless text"])
def test_unparseable_tag_names_the_text(bad):
    with pytest.raises(TaxonParseError, match="not a taxonTag text"):
        parse_taxon_tag(bad)


def test_class_of_tag():
    assert class_of_tag(tol_texts(GOLDFINCH)["taxonTag"]) == "aves"
    assert class_of_tag("a photo of nothing.") == ""


def _original_labels(path, text_type):
    """An independent re-statement of BioCLIP's naming_eval.to_classes on csv.DictReader rows."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        g = {k: (row.get(k) or "") for k in ("kingdom", "phylum", "cls", "order", "family", "genus", "species",
                                               "common_name")}
        sci = g["genus"].capitalize() + " " + g["species"].lower() if g["species"] else g["genus"].capitalize()
        if g["kingdom"] == "":
            tax = " ".join([g["genus"].capitalize(), g["species"].lower()])
        else:
            tax = " ".join([g[k].capitalize() for k in ("kingdom", "phylum", "cls", "order", "family", "genus")]
                           + [g["species"].lower()])
        if text_type == "asis":
            out.append(row["class"])
        elif text_type == "taxon_com":
            out.append(tax if g["common_name"] == "" else tax + " with common name " + g["common_name"])
        elif text_type == "sci":
            out.append(sci)
    return out


# published class counts (biocap-original.md §6.1)
REAL_SETS = [
    ("camera_trap/ENA24-balanced.csv", "taxon_com", 1120, 20),
    ("camera_trap/desert-lion-balanced.csv", "taxon_com", 352, 32),
    ("camera_trap/island-balanced.csv", "taxon_com", 310, 33),
    ("camera_trap/ohio-small-animals-balanced.csv", "taxon_com", 468, 39),
    ("camera_trap/orinoquia-balanced.csv", "taxon_com", 336, 28),
    ("rare_species/metadata.csv", "taxon_com", 11983, 400),
    ("rare_species/metadata.csv", "sci", 11983, 400),
    ("nabirds/metadata.csv", "asis", 48562, 555),
    ("meta-album/PLK_Mini/metadata.csv", "asis", 3440, 86),
    ("meta-album/INS_Mini/metadata.csv", "asis", 4160, 104),
    ("meta-album/INS_2_Mini/metadata.csv", "asis", 4080, 102),
    ("meta-album/PLT_NET_Mini/metadata.csv", "asis", 1000, 25),
    ("meta-album/FNG_Mini/metadata.csv", "asis", 1000, 25),
    ("meta-album/PLT_VIL_Mini/metadata.csv", "asis", 1520, 38),
    ("meta-album/MED_LF_Mini/metadata.csv", "asis", 1000, 25),
    ("meta-album/PLT_DOC_Mini/metadata.csv", "asis", 1080, 27),
]


@pytest.mark.parametrize("rel,text_type,n_images,n_classes", REAL_SETS)
def test_labels_of_real_annotations_match_the_original(original_data, rel, text_type, n_images, n_classes):
    path = original_data / "classification_annotation" / rel
    table = schemas.CLASSIFICATION.read(path)
    labels = label_texts(table, text_type, source=str(path))
    assert labels == _original_labels(path, text_type)
    assert len(labels) == n_images
    assert len(set(labels)) == n_classes


def test_label_type_the_table_cannot_supply_names_file_and_columns(original_data):
    path = original_data / "classification_annotation" / "nabirds" / "metadata.csv"
    table = schemas.CLASSIFICATION.read(path)
    with pytest.raises(SchemaError, match=r"metadata.csv.*'taxon_com'.*\['kingdom'"):
        label_texts(table, "taxon_com", source=str(path))


def test_templates_files_are_read_with_the_bad_lines_named(tmp_path):
    from biocap_core.taxonomy import read_templates

    good = tmp_path / "t.txt"
    good.write_text("# ours\na photo of {}.\n\nitap of a {}.\n")
    assert read_templates(good) == ("a photo of {}.", "itap of a {}.")
    as_json = tmp_path / "t.json"
    as_json.write_text('["{}", "a {} in the wild"]')
    assert read_templates(as_json) == ("{}", "a {} in the wild")
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of {}.\nno slot\n{} and {}\n")
    with pytest.raises(SchemaError, match=r"bad.txt: template\(s\) at line/item \[2, 3\]"):
        read_templates(bad)
