"""The one image dataset: every kind of source, uint8 across workers, bad images reported and not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biocap_core import imagefiles
from biocap_core.errors import ImageError
from biocap_core.imagefiles import ImageFiles, image_batches
from biocap_core.model import build_model
from biocap_core.preprocess import image_transform
from biocap_core.zeroshot import encode_images


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(((48, 40), (90, 60), (32, 70))):
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(paths[1].read_bytes()[:200])
    return paths, truncated


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_hold_every_kind_of_source_as_the_eval_transform_gives_it(tiny_cfg, photos, workers):
    model = build_model(tiny_cfg)
    paths, truncated = photos
    transform = image_transform(model, train=False)
    given = transform(Image.open(paths[2]).convert("RGB"))
    sources = [paths[0], paths[1].read_bytes(), truncated, Image.open(paths[2]), given,
               paths[0].parent / "missing.jpg", torch.zeros(1, 4, 4), 42]
    batches = list(image_batches(ImageFiles(sources, model), batch_size=4, workers=workers))
    decoded = [p for b in batches for p in b.positions]
    assert decoded == [0, 1, 3, 4]
    images = torch.cat([b.images for b in batches])
    expected = torch.stack([transform(Image.open(p).convert("RGB")) for p in (paths[0], paths[1], paths[2])]
                           + [given])
    assert images.dtype == torch.float32 and torch.allclose(images, expected, atol=1e-5)
    why = dict(u for b in batches for u in b.unreadable)
    assert sorted(why) == [2, 5, 6, 7]
    assert why[2].startswith("cannot decode as an image (") and "truncated" in why[2].lower()
    assert why[5] == "no such image file"
    assert "(3, H, W)" in why[6] and "int" in why[7]


def test_encode_images_names_a_bad_image_or_hands_it_over(tiny_cfg, photos):
    model = build_model(tiny_cfg).eval()
    paths, truncated = photos
    with pytest.raises(ImageError, match="truncated.jpg: cannot decode"):
        encode_images(model, [paths[0], truncated], batch_size=2)
    bad: dict[int, str] = {}
    feats = encode_images(model, [paths[0], truncated, paths[1]], batch_size=2, on_unreadable=bad.__setitem__)
    assert list(bad) == [1] and torch.count_nonzero(feats[1]) == 0
    alone = encode_images(model, [paths[0], paths[1]], batch_size=2)
    assert torch.allclose(feats[[0, 2]], alone, atol=1e-6)
    assert torch.allclose(feats[[0, 2]].norm(dim=1), torch.ones(2), atol=1e-5)


def test_jpegs_are_drafted_to_the_crop_size(tiny_cfg, tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1024, 768), (10, 200, 30)).save(big)
    data = ImageFiles([big, big.read_bytes()], build_model(tiny_cfg))
    assert data.draft_size == 32 and data._decode(0).size == (128, 96) and data._decode(1).size == (128, 96)


def test_without_draft_a_jpeg_crop_is_the_eval_transform_of_the_full_image(tiny_cfg, tmp_path):
    big = tmp_path / "big.jpg"
    gradient = np.linspace(0, 255, 1024 * 768 * 3).reshape(768, 1024, 3).astype(np.uint8)
    Image.fromarray(gradient).save(big, quality=90)
    model = build_model(tiny_cfg)
    full = ImageFiles([big], model, draft=False)
    assert full._decode(0).size == (1024, 768)
    _, crop = full[0]
    expected = image_transform(model, train=False)(Image.open(big))
    assert torch.allclose(full.to_float(crop[None])[0], expected, atol=1e-6)


def _device_only_corrupt(jpeg: bytes) -> bytes:
    """A JPEG whose header reads (so a ``gpu_decode`` worker hands it over) but whose scan names a
    component the frame lacks: only decoding, on the device, finds it broken."""
    broken = bytearray(jpeg)
    broken[jpeg.index(b"\xff\xda") + 5] = 9
    return bytes(broken)


@pytest.mark.parametrize("workers", [0, 1])
def test_gpu_decode_path_forced_onto_the_cpu_gives_the_default_paths_embeddings(tiny_cfg, photos, tmp_path,
                                                                                 workers):
    model = build_model(tiny_cfg).eval()
    paths, truncated = photos
    png = tmp_path / "photo.png"
    Image.open(paths[1]).save(png)
    corrupt = _device_only_corrupt(paths[0].read_bytes())
    given = image_transform(model, train=False)(Image.open(paths[2]).convert("RGB"))
    sources = [paths[0], corrupt, paths[1].read_bytes(), png, truncated, Image.open(paths[2]), given,
               tmp_path / "missing.jpg"]
    runs = {}
    for gpu_decode in (False, True):
        bad: dict[int, str] = {}
        feats = encode_images(model, sources, batch_size=3, workers=workers, on_unreadable=bad.__setitem__,
                              gpu_decode=gpu_decode)
        runs[gpu_decode] = feats, bad
    (cpu, cpu_bad), (dev, dev_bad) = runs[False], runs[True]
    assert sorted(dev_bad) == [1, 4, 7] and sorted(cpu_bad) == [1, 4, 7]
    assert dev_bad[1].startswith("cannot decode as an image (") and dev_bad[7] == "no such image file"
    assert torch.count_nonzero(dev[[1, 4, 7]]) == 0
    good = [0, 2, 3, 5, 6]
    assert (dev[good] * cpu[good]).sum(dim=1).min() > 0.999  # cosine of unit rows
    assert torch.allclose(dev[6], cpu[6], atol=1e-6)  # a preprocessed tensor passes through either way


def test_gpu_decode_batches_keep_positions_in_order(tiny_cfg, photos):
    paths, truncated = photos
    corrupt = _device_only_corrupt(paths[1].read_bytes())
    data = ImageFiles([paths[0], corrupt, truncated, paths[2]], build_model(tiny_cfg), gpu_decode=True)
    batches = list(image_batches(data, batch_size=4))
    assert [b.positions for b in batches] == [[0, 3]]
    assert sorted(p for p, _ in batches[0].unreadable) == [1, 2]
    assert batches[0].images.shape == (2, 3, 32, 32) and batches[0].images.dtype == torch.float32


def _random_jpegs(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_workers_reusing_shared_batch_slots_hand_over_every_batch_intact(tiny_cfg, tmp_path, monkeypatch):
    """More hand-overs than the ring of shared slots holds (2 workers x 2 prefetched + 2), each distinct."""
    monkeypatch.setattr(imagefiles, "HANDOVER_IMAGES", 4)  # hand-overs of 2 model batches of 2
    data = ImageFiles(_random_jpegs(tmp_path, 45), build_model(tiny_cfg))
    alone = torch.cat([b.images for b in image_batches(data, batch_size=2, workers=0)])
    batches = list(image_batches(data, batch_size=2, workers=2))
    assert [b.positions for b in batches] == [[i, i + 1] for i in range(0, 44, 2)] + [[44]]
    assert torch.equal(torch.cat([b.images for b in batches]), alone)


def test_a_hand_over_is_cut_into_full_model_batches_each_with_its_unreadable_images(tiny_cfg, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setattr(imagefiles, "HANDOVER_IMAGES", 9)  # 3 model batches of 3 a hand-over
    paths = _random_jpegs(tmp_path, 10)
    for bad in (2, 7):
        paths[bad].write_bytes(paths[bad].read_bytes()[:100])
    data = ImageFiles(paths, build_model(tiny_cfg))
    batches = list(image_batches(data, batch_size=3, workers=1))
    assert [b.positions for b in batches] == [[0, 1, 3], [4, 5, 6], [8], [9]]
    assert [[p for p, _ in b.unreadable] for b in batches] == [[2], [], [7], []]
    alone = torch.stack([data.to_float(data[i][1][None])[0] for i in (0, 1, 3, 4, 5, 6, 8, 9)])
    assert torch.equal(torch.cat([b.images for b in batches]), alone)
