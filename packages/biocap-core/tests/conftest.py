"""Shared fixtures: a tiny OpenCLIP config, the original's data folder and a small toy dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    import copy

    return copy.deepcopy(TINY_CFG)


@pytest.fixture(scope="session")
def original_data() -> Path:
    if not ORIGINAL_DATA.is_dir():
        pytest.skip(f"{ORIGINAL_DATA} not present")
    return ORIGINAL_DATA


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """A small toy tree of life written by the README's command, shared by the toy tests."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("toy")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "biocap_core",
            "toy",
            "--out",
            str(out),
            "--species",
            "12",
            "--images-per-species",
            "6",
            "--shard-size",
            "20",
            "--image-size",
            "48",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out
