"""The toy tree of life: real TreeOfLife layout, every table valid, traits true of the images."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import polars as pl
import pytest
from PIL import Image

from biocap_core import schemas
from biocap_core.errors import ShardError
from biocap_core.shards import count_samples, expand_urls, iter_samples, read_sizes
from biocap_core.taxonomy import label_texts, parse_taxon_tag, tol_names, tol_texts
from biocap_core.toy import ToyConfig, generate, make_species


def test_shards_have_the_treeoflife_members(toy_dir):
    sizes = read_sizes(toy_dir / "train")
    assert sum(sizes.values()) == 12 * 6 and len(sizes) == 4
    urls = expand_urls(str(toy_dir / "train" / "shard-{000000..000003}.tar"))
    assert count_samples(urls) == 72
    with tarfile.open(urls[0]) as tar:
        names = tar.getnames()
    key = names[0].split(".", 1)[0]
    members = (
        "jpg",
        "sci.txt",
        "com.txt",
        "taxon.txt",
        "taxonTag.txt",
        "sci_com.txt",
        "taxon_com.txt",
        "taxonTag_com.txt",
        "scientific_name.txt",
        "taxonomic_name.txt",
        "common_name.txt",
        "caption.txt",
    )
    assert sorted(n for n in names if n.startswith(key)) == sorted(
        f"{key}.{m}" for m in members
    )  # taxonTag keeps its T
    samples = list(iter_samples(urls))
    assert len(samples) == 72 and len({s["__key__"] for s in samples}) == 72
    for s in samples:
        taxon = parse_taxon_tag(s["taxontag_com.txt"].decode())
        assert {k: s[f"{k.lower()}.txt"].decode() for k in tol_texts(taxon)} == tol_texts(taxon)
        assert {k: s[f"{k}.txt"].decode() for k in tol_names(taxon)} == tol_names(taxon)
        assert Image.open(io.BytesIO(s["jpg"])).size == (48, 48)


def test_training_shards_mix_the_species(toy_dir):
    """A shuffle buffer holds a few shards' worth of samples; with species-major shards its batches
    would come from a handful of species at a time. Each 20-image shard of the 12-species toy holds
    most species (4 or fewer if written species by species), and every image is there once."""
    shards = sorted((toy_dir / "train").glob("shard-*.tar"))
    species = [{s["scientific_name.txt"] for s in iter_samples([str(p)])} for p in shards[:3]]
    assert all(len(names) >= 8 for names in species), [len(names) for names in species]
    catalog = pl.read_parquet(toy_dir / "catalog.parquet").filter(pl.col("split") == "train")
    assert catalog.group_by("genus", "species").len()["len"].to_list() == [6] * 12


def test_catalog_and_every_table_validate(toy_dir):
    # the layouts readers know, column for column; what else the generator records (each image's
    # life stage, background, tilt) is in attributes.parquet, which no reader needs
    layouts = {
        "catalog.parquet": schemas.CATALOG.column_names,
        "retrieval/toy_retrieval.csv": ["", "id", "source_url", "captions", "md5"],
        "inquire/queries.csv": [
            "query_id",
            "query_text",
            "supercategory",
            "category",
            "iconic_group",
        ],
        "inquire/rerank.parquet": [
            "query",
            "filepath",
            "relevant",
            "inat24_image_id",
            "supercategory",
        ],
    }
    for rel, columns in layouts.items():
        read = pl.read_parquet if rel.endswith(".parquet") else pl.read_csv
        assert read(toy_dir / rel).columns == columns, rel
    schemas.TOY_ATTRIBUTES.read(toy_dir / "attributes.parquet")
    catalog = schemas.CATALOG.read(toy_dir / "catalog.parquet")
    assert catalog.height == 12 * 6 + 12 * 4
    assert set(catalog["split"]) == {"train", "val"}
    for layout, label_type in (
        ("camera_trap.csv", "taxon_com"),
        ("metadata.csv", "asis"),
        ("rare_species.csv", "taxon_com"),
        ("rare_species.csv", "sci"),
    ):
        table = schemas.CLASSIFICATION.read(toy_dir / "zeroshot" / layout)
        labels = label_texts(table, label_type)
        assert len(set(labels)) == 12
        assert all((toy_dir / "zeroshot" / p).is_file() for p in table["filepath"])
    retrieval = schemas.RETRIEVAL.read(toy_dir / "retrieval" / "toy_retrieval.csv")
    assert all((toy_dir / "retrieval" / "images" / f"{i}.jpg").is_file() for i in retrieval["id"])
    queries = schemas.INQUIRE_QUERIES.read(toy_dir / "inquire" / "queries.csv")
    rerank = schemas.INQUIRE_RERANK.read(toy_dir / "inquire" / "rerank.parquet")
    per_query = rerank.group_by("query").agg(pl.len(), pl.col("relevant").sum())
    assert per_query.height == queries.height
    assert (per_query["len"] <= 100).all() and (per_query["len"] > per_query["relevant"]).all()
    assert (per_query["relevant"] >= 1).all()
    assert set(queries["supercategory"]) == {"Appearance", "Behavior", "Context", "Species"}
    schemas.WIKI_DESCRIPTIONS.read(toy_dir / "wiki" / "wiki_descriptions.parquet")
    schemas.SPECIES_LIST.read(toy_dir / "wiki" / "species.csv")
    schemas.FORMAT_EXAMPLES.read(toy_dir / "format_examples.parquet")
    manifest = json.loads((toy_dir / "manifest.json").read_text())
    assert manifest["species"] == 12


def test_traits_follow_the_taxonomy():
    species = make_species(64, seed=3)
    by_class, by_family = {}, {}
    for sp in species:
        by_class.setdefault(sp.taxon.klass, set()).add(sp.colour)
        by_family.setdefault(sp.taxon.family, set()).add(sp.pattern)
    assert all(len(colours) == 1 for colours in by_class.values())
    assert all(len(patterns) == 1 for patterns in by_family.values())
    combos = {
        (sp.plan, sp.colour, sp.shape, sp.pattern, sp.pattern_colour, sp.marks) for sp in species
    }
    assert len(combos) == 64  # every species looks different
    assert len({sp.scientific for sp in species}) == 64
    assert any(
        sp.taxon.common_name == "" for sp in species
    )  # some fall back to the scientific name


def test_generation_is_deterministic(tmp_path):
    cfg = ToyConfig(
        species=4,
        images_per_species=3,
        val_per_species=1,
        eval_per_species=1,
        inquire_queries=4,
        image_size=32,
        shard_size=5,
        seed=7,
        caption_noise=0.2,
    )
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    for rel in (
        "train/shard-000000.tar",
        "train/sizes.json",
        "catalog.parquet",
        "zeroshot/camera_trap.csv",
        "attributes.parquet",
        "retrieval/toy_retrieval.csv",
        "inquire/rerank.parquet",
    ):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_cli_validate_reports_bad_tables(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n1\n")
    run = subprocess.run(
        [sys.executable, "-m", "biocap_core", "validate", str(bad), "--schema", "retrieval"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "bad.csv" in run.stderr and "'captions'" in run.stderr


def _tar(path, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_reader_groups_like_webdataset_with_long_names_and_directories(tmp_path):
    import webdataset as wds

    long_dir = "d" * 120
    members = [
        (f"{long_dir}/k1.jpg", b"img1"),
        (f"{long_dir}/k1.taxonTag.txt", b"t1"),
        ("k2.jpg", b"img2"),
        ("k2.sci.txt", b"s2"),
        ("README", b"no extension"),
    ]
    _tar(tmp_path / "s.tar", members)
    ours = list(iter_samples(str(tmp_path / "s.tar")))
    theirs = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False))
    assert [s["__key__"] for s in ours] == [f"{long_dir}/k1", "k2"]
    assert ours == theirs


def test_truncated_tar_names_the_shard(toy_dir, tmp_path):
    data = (toy_dir / "val" / "shard-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError, match=r"cut.tar: truncated tar"):
        list(iter_samples(str(cut)))


def test_reading_text_and_shards_does_not_import_torch():
    code = (
        "import sys, biocap_core.shards, biocap_core.taxonomy, biocap_core.schemas; print('torch'"
        " in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
