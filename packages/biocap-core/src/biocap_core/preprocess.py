"""The one image preprocessing, shared by training, evaluation and captioning.

OpenCLIP's transforms, configured as the original run used them: at train
time RandomResizedCrop(scale 0.9-1.0, bicubic); at eval time resize of the
short side and a centre crop; OpenAI mean/std unless the checkpoint's own
preprocess config says otherwise. Only decoding is ours: large JPEGs can be
decoded at reduced size (PIL draft mode) when the crop is much smaller.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence

import torch
from open_clip.transform import AugmentationCfg, MaybeToTensor, PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.transforms import Compose, Normalize, PILToTensor

#: The train-time crop scale of the original (OpenCLIP's default).
TRAIN_CROP_SCALE = (0.9, 1.0)


def preprocess_cfg(model_or_size) -> PreprocessCfg:
    """OpenCLIP PreprocessCfg for a BioCAP model (or a plain image size)."""
    if isinstance(model_or_size, (int, tuple)):
        size, overrides = model_or_size, {}
    else:
        size, overrides = (
            model_or_size.image_size,
            dict(getattr(model_or_size, "preprocess_cfg", {}) or {}),
        )
    overrides.pop("size", None)
    fields = {k: v for k, v in overrides.items() if k in PreprocessCfg.__dataclass_fields__}
    for key in ("mean", "std"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return PreprocessCfg(size=size, **fields)


def image_transform(model_or_size, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The train or eval transform, PIL image to normalised tensor."""
    return image_transform_v2(
        preprocess_cfg(model_or_size),
        is_train=train,
        aug_cfg=AugmentationCfg(scale=TRAIN_CROP_SCALE),
    )


def split_eval_transform(
    model_or_size,
) -> tuple[Callable[[Image.Image], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The eval transform in two stages: PIL image to a uint8 (3, H, W) tensor, and a uint8 batch
    (B, 3, H, W), on any device, to the normalised float batch (the same values as the eval
    transform per image). Both come from the eval transform itself, so size, mean and std stay
    there.

    Data loaders pass the uint8 batch between processes (4x fewer bytes than float32) and normalise
    it where the model runs.
    """
    steps = image_transform(model_or_size, train=False).transforms
    *pil_steps, to_tensor, normalize = steps
    if not isinstance(to_tensor, MaybeToTensor) or not isinstance(normalize, Normalize):
        raise TypeError(f"the eval transform does not end in ToTensor, Normalize: {steps}")
    return Compose([*pil_steps, PILToTensor()]), UInt8ToFloat(normalize.mean, normalize.std)


class UInt8ToFloat:
    """A uint8 batch (B, 3, H, W) to the normalised float batch: ToTensor's ``/ 255``, then
    Normalize's ``(x - mean) / std``, op for op, so the values equal the per-image transform's.

    Mean and std are kept as tensors per device: torchvision's ``normalize`` makes them and checks
    std for zeros on every call, which costs a host-to-device copy and a sync per batch on CUDA, and
    on the CPU 0.17 instead of 0.14 ms for a batch of 32 64x64 images (measured)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if any(s == 0 for s in std):
            raise ValueError(f"a normalisation std of 0: {tuple(std)}")
        self.mean, self.std = tuple(mean), tuple(std)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device not in self._on:
            self._on[batch.device] = (
                torch.tensor(self.mean, device=batch.device).view(-1, 1, 1),
                torch.tensor(self.std, device=batch.device).view(-1, 1, 1),
            )
        mean, std = self._on[batch.device]
        return batch.float().div_(255).sub_(mean).div_(std)


def short_side(size: int | tuple[int, int]) -> int:
    return size if isinstance(size, int) else min(size)


def decode_image(
    source: bytes | str | os.PathLike, draft_size: int | None = None, max_side: int | None = None
) -> Image.Image:
    """Decode an image as RGB. With ``draft_size``, a JPEG is decoded at the smallest
    DCT scale (1/2, 1/4, 1/8) that keeps both sides >= ``draft_size``, which cuts
    decode time for large images without changing what the crop sees. With
    ``max_side`` (a VLM that tiles the whole image), the image is shrunk to that
    longest side, keeping its aspect ratio; a JPEG is first decoded at the smallest
    DCT scale that keeps the longest side >= ``max_side``.

    The pixels are decoded here, not lazily by the first transform, so bad data (a
    truncated JPEG) fails in this call, where callers catch it and name the image."""
    img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    elif max_side and img.format == "JPEG" and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img.draft(
            "RGB", (max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale)))
        )
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA") else img.convert("RGB")
    img.load()
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img
