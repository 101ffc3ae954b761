"""Session fixtures: a small toy tree of life, a BioCAP-toy checkpoint briefly trained on it, a taxa
index built from its catalog with that checkpoint (with trait captions), and a Predictor on them.

The checkpoint comes from biocap-train, which biocap-predict does not depend on; the workspace's
test environment has it, and tests needing it are skipped where it is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MODEL = "BioCAP-toy"

# The toy models are too small to gain from more threads, and on a shared machine idle-spinning
# OpenMP threads make each small op up to 10x slower.
torch.set_num_threads(1)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Under pytest-xdist, every test of this package runs in one worker, so the trained checkpoint
    below (the suite's most expensive fixture) is trained once, not once per worker."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("biocap-predict"))


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """12 toy species: 24 training images each (shards), 4 zero-shot images each, 2 retrieval pairs each."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(out, ToyConfig(species=12, images_per_species=24, val_per_species=1, eval_per_species=4,
                            inquire_queries=4, inquire_candidates=20, image_size=64, shard_size=64))
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(toy_dir, tmp_path_factory) -> Path:
    """A BioCAP-toy checkpoint trained for 200 small steps (about a minute): far from good, well above chance."""
    biocap_train = pytest.importorskip("biocap_train")
    logs = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # else the trainer sizes its thread pool to the machine
        run = biocap_train.train(biocap_train.TrainConfig(
            train_data="::".join(str(p) for p in sorted((toy_dir / "train").glob("shard-*.tar"))), model=MODEL,
            batch_size=32, steps=200, lr=5e-3, warmup=5, precision="fp32", workers=0, shuffle_buffer=256,
            logs=str(logs), name="predict", save_frequency=0, zeroshot_frequency=1000, progress=False,
            device="cpu", seed=0))
    return Path(run.checkpoint)


@pytest.fixture(scope="session")
def toy_model(trained_checkpoint):
    from biocap_core.checkpoints import load_model

    return load_model(MODEL, str(trained_checkpoint)).eval()


@pytest.fixture(scope="session")
def toy_index(toy_dir, toy_model, tmp_path_factory) -> Path:
    """A taxa index folder of the toy catalog, with the toy retrieval captions as trait captions."""
    from biocap_predict import TaxaIndex

    out = tmp_path_factory.mktemp("index") / "toy-index"
    TaxaIndex.build(toy_model, toy_dir / "catalog.parquet", out, captions=toy_dir / "retrieval" / "toy_retrieval.csv",
                    device="cpu", progress=False, model_name=MODEL)
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

    The briefly trained fixture model is right on only some toy photos; these tests check that the API
    reports the model's answers faithfully, which needs a photo whose right answers the model gives:
    its species on top of the index, and first among its own and three other species' names.
    """
    named = {row["file_name"]: row["species"]
             for row in toy_predictor.predict([str(p) for p, _ in zeroshot_images], rank="species", k=1)}
    for path, truth in zeroshot_images:
        others = list(dict.fromkeys(t for _, t in zeroshot_images if t != truth))[:3]
        if named[str(path)] != truth:
            continue
        if toy_predictor.classify([path], labels=[*others, truth], k=1)[0]["classification"] == truth:
            return {"path": path, "name": path.name, "bytes": path.read_bytes(), "scientific": truth,
                    "others": others}
    pytest.fail("the fixture model gets no toy zero-shot photo right")
