"""Shared fixtures: a tiny model config, a small toy tree of life, the original annotation files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
ORIGINAL_DATA = REPO.parent / "shared" / "data" / "biocap-original"

#: A tiny OpenCLIP CLIP config (2-layer towers of width 64, 32 px images), smaller than the
#: toolkit's BioCAP-toy so model tests run at CPU speed.
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture
def tiny_cfg() -> dict:
    return copy.deepcopy(TINY_CFG)


@pytest.fixture
def tiny_json(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CFG))
    return path


@pytest.fixture
def tiny_model():
    from biocap_core.model import build_model

    torch.manual_seed(0)
    return build_model(copy.deepcopy(TINY_CFG)).eval()


@pytest.fixture(scope="session")
def original_data() -> Path:
    if not ORIGINAL_DATA.is_dir():
        pytest.skip(f"{ORIGINAL_DATA} not present")
    return ORIGINAL_DATA


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """A small toy tree of life (12 species, 4 zero-shot images each, 8 INQUIRE-style queries)."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(
        out,
        ToyConfig(
            species=12,
            images_per_species=1,
            val_per_species=1,
            eval_per_species=4,
            inquire_queries=8,
            inquire_candidates=40,
            image_size=40,
            shard_size=64,
        ),
    )
    return out
