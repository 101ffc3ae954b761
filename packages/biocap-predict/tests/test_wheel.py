"""biocap-predict installs alone: wheels of biocap-core and biocap-predict into a fresh venv,
outside the workspace (the root conftest's ``install_alone``): core and predict, not train, eval,
captions, wiki, vLLM or Scrapy, and not the [web] extra's FastAPI; and its commands run there."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from biocap_core.checkpoints import save_weights
from biocap_core.model import build_model

pytestmark = pytest.mark.slow
FORBIDDEN = (
    "biocap-train",
    "biocap-eval",
    "biocap-captions",
    "biocap-wiki",
    "vllm",
    "scrapy",
    "fastapi",
)


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory) -> Path:
    """12 toy species, 2 zero-shot images each: a random model needs no training images."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(
        out,
        ToyConfig(
            species=12,
            images_per_species=1,
            val_per_species=1,
            eval_per_species=2,
            inquire_queries=2,
            inquire_candidates=10,
            image_size=64,
            shard_size=64,
        ),
    )
    return out


def test_wheels_install_alone_and_predict_on_the_toy_tree_of_life(
    install_alone, tmp_path, small_toy
):
    installed = install_alone("biocap-predict")
    weights = save_weights(
        build_model("BioCAP-toy"), tmp_path / "random.safetensors"
    )  # a core model name
    model = ["--model", "BioCAP-toy", "--pretrained", str(weights), "--device", "cpu", "--quiet"]
    images, index = small_toy / "zeroshot" / "images", str(tmp_path / "idx")
    commands = [
        ["index", "--taxa", str(small_toy / "catalog.parquet"), "--out", index, *model],
        [
            "predict",
            str(images),
            "--recursive",
            "--index",
            index,
            "--rank",
            "all",
            "--k",
            "1",
            "--workers",
            "0",
            *model,
        ],
        ["list-models"],
        ["serve", "--index", index, *model[:4]],
    ]
    probe = installed.run(commands)
    assert {"biocap-core", "biocap-predict", "torch", "typer"} <= set(probe["installed"])
    assert not set(FORBIDDEN) & set(probe["installed"])
    assert probe["module"].startswith(str(installed.venv))
    indexed, predicted, listed, served = probe["runs"]
    assert indexed[0] == 0 and (tmp_path / "idx" / "index.json").is_file(), indexed
    assert predicted[0] == 0, predicted
    rows = list(csv.DictReader(io.StringIO(predicted[1])))
    assert len(rows) == 7 * len(list(images.rglob("*.jpg"))) > 0 and rows[0]["rank"] == "kingdom"
    assert listed[0] == 0 and "BioCAP-toy" in listed[1]
    assert served[0] == 1 and "biocap-predict[web]" in served[2]
