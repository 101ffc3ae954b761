"""One preprocessing: OpenCLIP's transforms as the original used them, plus draft decoding."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from biocap_core.model import build_model
from biocap_core.preprocess import (
    UInt8ToFloat,
    decode_image,
    image_transform,
    preprocess_cfg,
    split_eval_transform,
)


def _gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (h, w, 1)),
            np.broadcast_to(y, (h, w, 1)),
            np.full((h, w, 1), 128, np.float32),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def test_eval_transform_resizes_short_side_then_centre_crops_a_non_square_image():
    img = _gradient(300, 150)  # landscape
    out = image_transform(224, train=False)(img)
    assert out.shape == (3, 224, 224)
    resized = TF.resize(img, 224, interpolation=TF.InterpolationMode.BICUBIC)
    assert resized.size == (448, 224)
    expected = TF.normalize(
        TF.to_tensor(TF.center_crop(resized, 224)),
        open_clip.OPENAI_DATASET_MEAN,
        open_clip.OPENAI_DATASET_STD,
    )
    assert torch.allclose(out, expected, atol=1e-5)
    # the centre crop keeps the middle: the left and right thirds of the gradient are gone
    assert out[0, :, 0].mean() > expected.new_tensor(-1.0).item()


def test_split_eval_transform_gives_the_eval_transforms_tensors_batched(tiny_cfg):
    model = build_model(tiny_cfg)
    model.preprocess_cfg = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    to_uint8, to_float = split_eval_transform(model)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in ((32, 32), (300, 150), (40, 90), (17, 200))
    ]
    images.append(_gradient(64, 48))
    crops = [to_uint8(img) for img in images]
    assert all(c.dtype == torch.uint8 and c.shape == (3, 32, 32) for c in crops)
    expected = torch.stack([image_transform(model, train=False)(img) for img in images])
    assert torch.equal(to_float(torch.stack(crops)), expected)


def test_a_zero_std_is_refused_when_the_normaliser_is_made():
    with pytest.raises(ValueError, match="std of 0"):
        UInt8ToFloat((0.5, 0.4, 0.3), (0.2, 0.0, 0.3))


def test_train_transform_is_random_resized_crop_of_the_right_size():
    img = _gradient(
        220, 200
    )  # RandomResizedCrop falls back to a centre crop when no 0.9-area crop fits
    t = image_transform(64, train=True)
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(1)
    b = t(img)
    assert a.shape == b.shape == (3, 64, 64)
    assert not torch.equal(a, b)
    rrc = [s for s in t.transforms if type(s).__name__ == "RandomResizedCrop"]
    assert rrc and rrc[0].scale == (0.9, 1.0)


def test_model_preprocess_cfg_follows_checkpoint(tiny_cfg):
    model = build_model(tiny_cfg)
    assert preprocess_cfg(model).size == (32, 32)
    assert preprocess_cfg(model).mean == open_clip.OPENAI_DATASET_MEAN
    model.preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert preprocess_cfg(model).mean == (0.5, 0.5, 0.5)


def test_draft_decoding_shrinks_large_jpegs_but_keeps_the_crop_size():
    buf = io.BytesIO()
    _gradient(1600, 1200).save(buf, format="JPEG")
    full = decode_image(buf.getvalue())
    small = decode_image(buf.getvalue(), draft_size=224)
    assert full.size == (1600, 1200)
    assert min(small.size) >= 224 and small.size[0] < 800  # 1/4 scale: 400 x 300
    assert small.mode == "RGB"
    png = io.BytesIO()
    _gradient(40, 30).convert("P").save(png, format="PNG")
    assert decode_image(png.getvalue(), draft_size=16).mode == "RGB"


def test_max_side_drafts_by_the_longest_side_then_shrinks_to_it(monkeypatch):
    from PIL import Image

    buf = io.BytesIO()
    _gradient(2000, 1000).save(buf, format="JPEG")
    decoded_at = []
    real_thumbnail = Image.Image.thumbnail
    monkeypatch.setattr(
        Image.Image,
        "thumbnail",
        lambda self, *a, **k: (decoded_at.append(self.size), real_thumbnail(self, *a, **k))[1],
    )
    image = decode_image(buf.getvalue(), max_side=480)
    assert image.size == (480, 240) and image.mode == "RGB"
    assert decoded_at == [
        (500, 250)
    ]  # 1/4 DCT scale: the longest side still >= 480 (both sides would keep 1/2)
    assert decode_image(buf.getvalue(), max_side=4000).size == (2000, 1000)  # never enlarged
