"""Shared fixtures: a small toy tree of life and a tiny model config, so each test runs in
seconds."""

from __future__ import annotations

import json
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
    generate(
        out,
        ToyConfig(
            species=16,
            images_per_species=12,
            val_per_species=2,
            eval_per_species=2,
            inquire_queries=4,
            inquire_candidates=10,
            image_size=32,
            shard_size=32,
        ),
    )
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


@pytest.fixture(scope="session")
def fast_args(toy_train, tiny_model) -> dict:
    """TrainConfig keyword arguments for a few fast fp32 CPU steps on the toy shards, all but
    ``logs`` (module-scoped fixtures give their own folder)."""
    return dict(
        train_data=toy_train,
        model=tiny_model,
        batch_size=16,
        train_num_samples=80,
        epochs=2,
        lr=2e-3,
        warmup=2,
        precision="fp32",
        workers=0,
        shuffle_buffer=64,
        name="run",
        log_every_n_steps=1,
        progress=False,
        device="cpu",
    )


@pytest.fixture
def base_args(fast_args, tmp_path) -> dict:
    """:func:`fast_args` logging under this test's own folder."""
    return {**fast_args, "logs": str(tmp_path / "logs")}


def _rewrite_shards(urls, out: Path, change) -> list[str]:
    import webdataset as wds

    from biocap_core.shards import iter_samples

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for url in urls:
        path = out / Path(url).name
        with wds.TarWriter(str(path)) as sink:
            for s in iter_samples(url):
                sink.write(
                    change({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"})
                )
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def rewrite_shards():
    """``rewrite_shards(urls, out_dir, change)``: copies of the shards with ``change(sample)``
    applied to every sample (it returns the sample to write); returns the new paths."""
    return _rewrite_shards


@pytest.fixture(scope="session")
def no_caption_shards(toy, tmp_path_factory) -> list[str]:
    """The toy training shards without caption.txt, like real TreeOfLife-10M shards."""
    urls = sorted(str(p) for p in (toy / "train").glob("shard-*.tar"))
    return _rewrite_shards(
        urls,
        tmp_path_factory.mktemp("no-caption"),
        lambda s: {k: v for k, v in s.items() if k != "caption.txt"},
    )


def _corrupt_inside(jpeg: bytes) -> bytes:
    bad = bytearray(jpeg)
    table = bad.index(
        b"\xff\xc4"
    )  # the first Huffman table: its 16 code-length counts become nonsense
    bad[table + 5 : table + 21] = b"\xff" * 16
    return bytes(bad)


@pytest.fixture(scope="session")
def corrupt_inside():
    """``corrupt_inside(jpeg)``: the JPEG with a bogus Huffman table but its header and end marker
    intact, so ``--gpu-decode``'s workers hand it over and only the decode (on the device) finds
    it."""
    return _corrupt_inside
