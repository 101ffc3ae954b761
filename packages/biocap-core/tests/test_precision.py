"""What each --precision value does to a model's weights and to the autocast around it."""

from __future__ import annotations

import pytest
import torch

from biocap_core.model import build_model
from biocap_core.precision import PRECISIONS, autocast, input_dtype, weight_dtype


@pytest.mark.parametrize(
    "precision,weights",
    [
        ("fp32", torch.float32),
        ("amp", torch.float32),
        ("amp_bf16", torch.float32),
        ("bf16", torch.bfloat16),
    ],
)
def test_only_pure_precisions_cast_the_weights_and_norms_stay_fp32(tiny_cfg, precision, weights):
    model = build_model(tiny_cfg, precision=precision)
    assert (
        model.visual.proj.dtype
        == model.visual.caption_proj.dtype
        == model.visual.conv1.weight.dtype
        == weights
    )
    assert model.visual.ln_post.weight.dtype == torch.float32
    assert input_dtype(precision) == weights


@pytest.mark.parametrize("precision", ["amp_bf16", "bf16"])
def test_inference_autocast_lets_fp32_images_meet_the_weights(tiny_cfg, precision):
    model = build_model(tiny_cfg, precision=precision).eval()
    images = torch.randn(2, 3, *model.image_size)
    with torch.no_grad(), autocast("cpu", precision):
        feats = model.encode_image(images)
    assert feats.dtype == torch.bfloat16


def test_training_runs_pure_weights_without_autocast_on_cast_inputs():
    """OpenCLIP's training: amp autocasts; pure bf16 computes in its weights' dtype with no
    autocast."""
    x = torch.randn(4, 4)
    with autocast("cpu", "amp_bf16", inputs_cast=True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("cpu", "bf16", inputs_cast=True):
        assert (x @ x).dtype == torch.float32
    with autocast("cpu", "fp32"):
        assert (x @ x).dtype == torch.float32


def test_unknown_values_are_refused():
    assert all(autocast("cpu", p) is not None for p in PRECISIONS)
    assert weight_dtype("fp16") == torch.float16 and weight_dtype("amp") is None
    with pytest.raises(ValueError, match="unknown precision 'pure_bf16'"):
        autocast("cpu", "pure_bf16")
