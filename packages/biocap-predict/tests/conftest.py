"""Fixtures shared by the whole test run: the no-argument demo's toy tree of life and the
BioCAP-toy checkpoint it trains (the root conftest.py runs the demo once for this package and
biocap-train's demo test), a taxa index built from its catalog with that checkpoint (with trait
captions), a Predictor on them, and the checkpoint exported as an OpenCLIP folder with the index's
text embeddings in pybioclip's layout.

The checkpoint comes from biocap-train, which biocap-predict does not depend on; the workspace's
test environment has it, and tests needing it are skipped where it is not installed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL = "BioCAP-toy"


@pytest.fixture(scope="session")
def trained_checkpoint(demo) -> Path:
    """The demo's BioCAP-toy checkpoint: 1,024 steps on the toy tree of life, far from good, well
    above chance."""
    if demo.run.returncode != 0:
        pytest.fail(f"the no-argument demo failed:\n{demo.run.stderr[-3000:]}")
    return Path(re.search(r"checkpoint: (\S+)", demo.run.stdout).group(1))


@pytest.fixture(scope="session")
def toy_dir(demo, trained_checkpoint) -> Path:
    """The demo's toy tree of life: 64 species, 4 zero-shot images and 2 retrieval pairs each."""
    return demo.cache / "toy-v4"


@pytest.fixture(scope="session")
def n_species(toy_dir) -> int:
    import polars as pl

    return pl.read_csv(toy_dir / "wiki" / "species.csv").height


@pytest.fixture(scope="session")
def toy_model(trained_checkpoint):
    from biocap_core.checkpoints import load_model

    return load_model(MODEL, str(trained_checkpoint)).eval()


@pytest.fixture(scope="session")
def toy_index(toy_dir, toy_model, tmp_path_factory) -> Path:
    """A taxa index folder of the toy catalog, with the toy retrieval captions as trait captions."""
    from biocap_predict import TaxaIndex

    out = tmp_path_factory.mktemp("index") / "toy-index"
    TaxaIndex.build(
        toy_model,
        toy_dir / "catalog.parquet",
        out,
        captions=toy_dir / "retrieval" / "toy_retrieval.csv",
        device="cpu",
        progress=False,
        model_name=MODEL,
    )
    return out


@pytest.fixture(scope="session")
def toy_predictor(toy_model, toy_index):
    from biocap_predict import Predictor

    return Predictor(toy_model, toy_index, device="cpu", batch_size=16, model_name=MODEL)


@pytest.fixture(scope="session")
def zeroshot_images(toy_dir) -> list[tuple[Path, str]]:
    """(image path, true binomial) of the toy's zero-shot images."""
    import polars as pl

    table = pl.read_csv(toy_dir / "zeroshot" / "metadata.csv")
    return [(toy_dir / "zeroshot" / p, c) for p, c in zip(table["filepath"], table["class"])]


@pytest.fixture(scope="session")
def photo(zeroshot_images, toy_predictor) -> dict:
    """A toy zero-shot photo that the fixture model gets right, its species and three other species.

    The demo's briefly trained model is right on only some toy photos; these tests check that the
    API reports the model's answers faithfully, which needs a photo whose right answers the model
    gives: its species on top of the index, and first among its own and three other species' names.
    """
    named = {
        row["file_name"]: row["species"]
        for row in toy_predictor.predict([str(p) for p, _ in zeroshot_images], rank="species", k=1)
    }
    for path, truth in zeroshot_images:
        others = list(dict.fromkeys(t for _, t in zeroshot_images if t != truth))[:3]
        if named[str(path)] != truth:
            continue
        if (
            toy_predictor.classify([path], labels=[*others, truth], k=1)[0]["classification"]
            == truth
        ):
            return {
                "path": path,
                "name": path.name,
                "bytes": path.read_bytes(),
                "scientific": truth,
                "others": others,
            }
    pytest.fail("the demo's model gets no toy zero-shot photo right")


@dataclass(frozen=True)
class OpenClipToy:
    """The toy model as pybioclip users hold a model: an OpenCLIP folder and published
    embeddings."""

    model: str  #: ``local-dir:FOLDER``, the checkpoint exported by core (config + safetensors)
    tol: Path  #: ``txt_emb_species.npy`` (dim, taxa) + ``.json``, the toy index's text embeddings
    index: Path  #: the same embeddings imported as a taxa index for the exported model (--from-tol)
    dim: int


@pytest.fixture(scope="session")
def open_clip_toy(toy_model, toy_index, tmp_path_factory) -> OpenClipToy:
    import numpy as np

    from biocap_core.checkpoints import export_open_clip, load_model
    from biocap_predict import TaxaIndex

    root = tmp_path_factory.mktemp("open-clip-toy")
    model = f"local-dir:{export_open_clip(toy_model, root / 'model')}"
    index = TaxaIndex.load(toy_index)
    tol = root / "tol"
    tol.mkdir()
    np.save(tol / "txt_emb_species.npy", index.embeddings.T.numpy())
    names = [[list(row[:7]), row[7]] for row in index.taxa.rows()]
    (tol / "txt_emb_species.json").write_text(json.dumps(names))
    TaxaIndex.from_tol(load_model(model), tol, root / "index", model_name=model)
    return OpenClipToy(model, tol, root / "index", index.embeddings.shape[1])


@pytest.fixture(scope="session")
def referenced_predictor(toy_model, toy_index, toy_dir, tmp_path_factory):
    """A Predictor on a copy of the toy index with two reference photos per species linked (the
    toy's zero-shot images, one folder per species)."""
    import shutil

    from biocap_predict import Predictor

    index = tmp_path_factory.mktemp("referenced") / "index"
    shutil.copytree(toy_index, index)
    predictor = Predictor(toy_model, index, device="cpu", batch_size=16, model_name=MODEL)
    predictor.add_references(toy_dir / "zeroshot" / "images", per_taxon=2)
    return predictor
