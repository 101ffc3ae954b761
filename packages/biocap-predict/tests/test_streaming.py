"""How rows are made and written in blocks, and how folders are listed: the parts of the data path
that ``benchmarks/predict_throughput.py`` made faster must give exactly what the simple way gives.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

import biocap_predict.outputs as outputs
import biocap_predict.predictor as predictor_module
from biocap_core import schemas
from biocap_core.checkpoints import load_model
from biocap_predict import Predictor, TaxaIndex
from biocap_predict.images import iter_paths
from biocap_predict.index import FORMAT, weights_fingerprint
from biocap_predict.outputs import RowWriter, read_rows
from biocap_predict.rows import TAXON_COLUMNS


@pytest.fixture(scope="module")
def random_predictor():
    """Random BioCAP-toy weights over 40 random species in 8 genera: what the scores are does not
    matter here, only that the two ways of making rows agree."""
    torch.manual_seed(0)
    model = load_model("BioCAP-toy", None, device="cpu", precision="fp32").eval()
    n, rng = 40, np.random.default_rng(0)
    taxa = pl.DataFrame(
        {
            "kingdom": ["Animalia"] * n,
            "phylum": ["Chordata"] * n,
            "class": ["Aves"] * n,
            "order": [f"order{i // 20}" for i in range(n)],
            "family": [f"family{i // 10}" for i in range(n)],
            "genus": [f"Genus{i // 5}" for i in range(n)],
            "species": [f"sp{i}" for i in range(n)],
            "common_name": [f"bird {i}" for i in range(n)],
        }
    ).select(schemas.TAXA.column_names)
    emb = torch.nn.functional.normalize(
        torch.from_numpy(rng.standard_normal((n, 64), dtype=np.float32)), dim=-1
    )
    index = TaxaIndex(
        taxa,
        emb,
        {"format": FORMAT, "model_fingerprint": weights_fingerprint(model), "captions": 0},
    )
    return Predictor(model, index, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(18):
        path = folder / f"{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_rows_scored_in_blocks_of_images_equal_rows_scored_batch_by_batch(
    random_predictor, photos, monkeypatch
):
    monkeypatch.setattr(predictor_module, "SCORE_IMAGES", 1)
    one_by_one = list(random_predictor.iter_predict(photos, rank="all", k=3))
    monkeypatch.setattr(predictor_module, "SCORE_IMAGES", 8)
    blocks = list(random_predictor.iter_predict(photos, rank="all", k=3))
    assert len(one_by_one) == 5  # 18 images in batches of 4
    assert [frame["file_name"].n_unique() for frame in blocks] == [
        8,
        8,
        2,
    ]  # two batches a block, then the rest
    alone, together = pl.concat(one_by_one), pl.concat(blocks)
    assert together.drop("score").equals(alone.drop("score"))
    assert np.allclose(together["score"].to_numpy(), alone["score"].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_rows_written_in_blocks_read_back_as_written_at_once(fmt, tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "BLOCK_ROWS", 5)
    frames = [
        pl.DataFrame(
            {
                "file_name": [f"img{b}-{i}.jpg" for i in range(3)],
                "species": ['a, "quoted"', "b", ""],
                "score": [0.5, 0.25, 0.125],
                "rank": ["species"] * 3,
            }
        )
        for b in range(4)
    ]
    columns = TAXON_COLUMNS
    writer = RowWriter(tmp_path / f"blocks.{fmt}", fmt, columns)
    writer.write(frames[0])
    writer.write(frames[1])  # 6 rows: a block is due
    if fmt == "csv":
        assert (
            len((tmp_path / "blocks.csv").read_text().splitlines()) == 1 + 6
        )  # written before close
    for frame in frames[2:]:
        writer.write(frame)
    writer.close()
    whole = RowWriter(tmp_path / f"whole.{fmt}", fmt, columns)
    whole.write(pl.concat(frames))
    whole.close()
    assert writer.count == whole.count == 12
    assert read_rows(tmp_path / f"blocks.{fmt}", fmt) == read_rows(tmp_path / f"whole.{fmt}", fmt)
    assert [r["file_name"] for r in read_rows(tmp_path / f"blocks.{fmt}", fmt)] == [
        name for frame in frames for name in frame["file_name"]
    ]


def test_a_folder_lists_its_visible_files_and_with_recursive_its_subfolders(tmp_path, monkeypatch):
    (tmp_path / "photos" / "site1" / "deep").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for name in (
        "photos/b.jpg",
        "photos/a.jpg",
        "photos/.hidden.jpg",
        "photos/site1/c.jpg",
        "photos/site1/deep/d.png",
        "elsewhere/e.jpg",
    ):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(
        tmp_path / "elsewhere", tmp_path / "photos" / "linked"
    )  # a symlinked folder is not walked into
    os.symlink(
        tmp_path / "elsewhere" / "e.jpg", tmp_path / "photos" / "f.jpg"
    )  # a symlinked file is listed
    folder = tmp_path / "photos"
    flat = [os.path.relpath(p, folder) for p in iter_paths([str(folder)])]
    assert flat == ["a.jpg", "b.jpg", "f.jpg"]
    deep = [os.path.relpath(p, folder) for p in iter_paths([str(folder) + "/"], recursive=True)]
    assert deep == ["a.jpg", "b.jpg", "f.jpg", "site1/c.jpg", "site1/deep/d.png"]
    monkeypatch.chdir(tmp_path)
    assert list(iter_paths(["./photos/site1"])) == [
        "photos/site1/c.jpg"
    ]  # named as the folder is, normalised
