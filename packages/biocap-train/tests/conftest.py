"""Shared fixtures: a small toy tree of life and a tiny model config, so each test runs in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> Path:
    """16 species x 12 images in 6 train shards of 32, 32 px."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(out, ToyConfig(species=16, images_per_species=12, val_per_species=2, eval_per_species=2,
                            inquire_queries=4, inquire_candidates=10, image_size=32, shard_size=32))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    path.write_text(json.dumps(TINY_MODEL))
    return str(path)


@pytest.fixture(scope="session")
def tiny_cfg() -> dict:
    import copy

    return copy.deepcopy(TINY_MODEL)


@pytest.fixture(scope="session")
def toy_train(toy) -> str:
    """The toy training shards as a '::'-joined list."""
    return "::".join(str(p) for p in sorted((toy / "train").glob("shard-*.tar")))


@pytest.fixture
def base_args(toy_train, tiny_model, tmp_path) -> dict:
    """TrainConfig keyword arguments for a few fast fp32 CPU steps on the toy shards."""
    return dict(train_data=toy_train, model=tiny_model, batch_size=16, train_num_samples=80, epochs=2,
                lr=2e-3, warmup=2, precision="fp32", workers=0, shuffle_buffer=64, logs=str(tmp_path / "logs"),
                name="run", log_every_n_steps=1, progress=False, device="cpu")


@pytest.fixture
def child_env() -> dict:
    """Environment for child processes: same threads as the parent, no stray torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    return env
