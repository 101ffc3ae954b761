"""The shipped registry: the paper's benchmarks, read from the real annotation files, and
selection."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_core.taxonomy import label_texts
from biocap_eval.cli import app
from biocap_eval.registry import RegistryError, load_registry, select
from biocap_eval.runner import status
from biocap_eval.tasks import inquire, retrieval

# Images and classes per benchmark, from the original's data (biocap-original.md section 6).
ZEROSHOT = {
    "nabirds": (48562, 555),
    "plankton": (3440, 86),
    "insects": (4160, 104),
    "insects-2": (4080, 102),
    "camera-trap": (1120 + 352 + 310 + 468 + 336, 20 + 32 + 33 + 39 + 28),
    "plantnet": (1000, 25),
    "fungi": (1000, 25),
    "plantvillage": (1520, 38),
    "medicinal-leaf": (1000, 25),
    "rare-species": (11983, 400),
}
RETRIEVAL = {"cornell-bird": 7007, "plantid": 2349}


def test_registry_holds_the_papers_benchmarks_in_table_order():
    reg = load_registry()
    paper = [b for b in reg.values() if "paper" in b.tags]
    assert [b.name for b in paper if b.task == "zeroshot"] == list(ZEROSHOT)
    assert [b.name for b in paper if b.task != "zeroshot"] == [
        "inquire-rerank",
        "cornell-bird",
        "plantid",
    ]
    columns = [c for b in paper for c in b.columns]
    assert columns == [
        "NABirds",
        "Plankton",
        "Insects",
        "Insects 2",
        "Camera Trap",
        "PlantNet",
        "Fungi",
        "PlantVillage",
        "Med. Leaf",
        "Rare Species",
        "Appear.",
        "Behav.",
        "Context",
        "Species",
        "Bird I2T",
        "Bird T2I",
        "PlantID I2T",
        "PlantID T2I",
    ]
    assert {b.name: b.label_type for b in paper if b.task == "zeroshot"} == {
        n: "taxon_com" if n in ("camera-trap", "rare-species") else "asis" for n in ZEROSHOT
    }
    assert len(reg["camera-trap"].subsets) == 5


def test_every_real_annotation_file_loads_with_the_published_counts(original_data):
    reg = load_registry()
    for name, (images, classes) in ZEROSHOT.items():
        st = status(reg[name], original_data)
        assert st.state == "no-images", (name, st.detail)
        assert (st.rows, st.images_found, st.images_expected) == (images, 0, images)
        assert st.detail == f"{images} images, {classes} classes ({reg[name].label_type})"
    for name, pairs in RETRIEVAL.items():
        st = status(reg[name], original_data)
        assert (st.state, st.rows) == ("no-images", pairs)
    st = inquire.status(reg["inquire-rerank"], original_data)
    assert st.state in ("no-images", "hub") and "200 queries" in st.notes[0]


def test_real_label_texts_and_captions_are_read_as_the_original(original_data):
    reg = load_registry()
    table = schemas.CLASSIFICATION.read(original_data / reg["rare-species"].annotation)
    assert (
        label_texts(table, "taxon_com")[0]
        == "Animalia Mollusca Bivalvia Unionida Unionidae Cyclonaias tuberculata with common name"
        " purple wartyback"
    )
    fungi = schemas.CLASSIFICATION.read(original_data / reg["fungi"].annotation)
    assert label_texts(fungi, "asis")[0] == "Amanita excelsa Gonn. & Rabenh."
    with pytest.raises(
        SchemaError, match=r"FNG_Mini/metadata.csv: label type 'taxon' needs column\(s\)"
    ):
        label_texts(fungi, "taxon", source=str(original_data / reg["fungi"].annotation))
    birds = schemas.RETRIEVAL.read(original_data / reg["cornell-bird"].annotation)
    assert retrieval.text_of(birds["captions"][0], "a photo of").startswith(
        "a photo of Aberts_Towhee, Large"
    )
    assert retrieval.text_of(birds["captions"][0], "a photo of", prefix_bug=True).startswith(
        "a photo ofAberts"
    )


def test_list_reports_present_without_images_and_exits_zero(original_data):
    result = CliRunner().invoke(app, ["list", "--data-root", str(original_data)])
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[0]: line
        for line in result.output.splitlines()[2:]
        if line and not line.startswith(" ")
    }
    for name in (*ZEROSHOT, *RETRIEVAL, "inquire-rerank"):
        assert "no-images" in lines[name] or "hub" in lines[name], lines[name]
    assert "0/48562" in lines["nabirds"] and "missing" in lines["toy-zeroshot"]


def test_selectors_and_unknown_names():
    reg = load_registry()
    assert [b.name for b in select(reg, ["toy"])] == [
        "toy-zeroshot",
        "toy-zeroshot-asis",
        "toy-inquire",
        "toy-retrieval",
    ]
    assert [b.name for b in select(reg, ["retrieval", "plantid"])] == [
        "cornell-bird",
        "plantid",
        "toy-retrieval",
    ]
    assert len(select(reg, ["all"])) == len(reg)
    with pytest.raises(RegistryError, match="unknown benchmark 'nabird'.*names"):
        select(reg, ["nabird"])


@pytest.mark.parametrize(
    "body, message",
    [
        (
            (
                '[[benchmark]]\nname = "x"\ntitle = "X"\ntask = "zeroshot"\ntable ='
                ' "zeroshot"\ncolumns = {}\nannotation = "a.csv"\nlabel_type = "latin"'
            ),
            "label_type 'latin'",
        ),
        (
            (
                '[[benchmark]]\nname = "x"\ntitle = "X"\ntask = "retrieval"\ntable ='
                ' "retrieval"\ncolumns = {}\nannotation = "a.csv"\nimage_dir = "i"'
            ),
            r"unknown field\(s\) \['image_dir'\]",
        ),
        (
            '[[benchmark]]\nname = "x"\ntask = "retrieval"',
            r"missing field\(s\) \['title', 'table', 'columns'\]",
        ),
        ("benchmark = [", "not valid TOML"),
    ],
)
def test_malformed_registry_names_the_entry(tmp_path, body, message):
    path = tmp_path / "reg.toml"
    path.write_text(body)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)
