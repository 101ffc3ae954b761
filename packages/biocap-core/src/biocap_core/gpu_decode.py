"""JPEG decoding, crop/resize and normalisation on the device, batched: the ``--gpu-decode`` path.

At ViT-B/16 speeds one GPU consumes thousands of images a second, and PIL decodes about 125
TreeOfLife-sized JPEGs a second per core, so CPU decoding would need 20+ cores per GPU. Here the
data workers only read the JPEG header (to draw the train crop, as the CPU path draws it) and
hand over the encoded bytes; :class:`DevicePreprocess` decodes the whole batch in one
``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA), then crops, resizes and normalises on the
device. Images nvJPEG may not take (PNG, CMYK JPEGs, files with data after the JPEG end marker)
are decoded in the worker by core's :func:`~biocap_core.preprocess.decode_image`.

The transform is not re-implemented: sizes, crop scale, interpolation, antialiasing and mean/std
are read off :func:`~biocap_core.preprocess.image_transform`, and its own torchvision steps run
on the decoded tensors. What differs from the PIL path is rounding in the JPEG IDCT and in the
bicubic resampling (a few uint8 levels on edges; see tests/test_gpu_decode.py for the bound).

torchvision rather than NVIDIA DALI: it is already a dependency, runs the same code on CPU (so
the CPU tests exercise the device path) and decodes a list of JPEGs in one batched nvJPEG call.
No GPU measurement chose between them; benchmarks/train_throughput.py measures this path.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import torch
from open_clip.transform import MaybeConvertMode, MaybeToTensor
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import CenterCrop, Compose, Normalize, PILToTensor, RandomResizedCrop, Resize
from torchvision.transforms import functional as F

from biocap_core.errors import GpuDecodeUnavailable
from biocap_core.preprocess import UInt8ToFloat, decode_image, image_transform

#: JPEG colour modes nvJPEG decodes to RGB; others (CMYK, YCCK) go through PIL in the worker.
_DEVICE_JPEG_MODES = ("RGB", "L")
_JPEG_END = b"\xff\xd9"


class EncodedBatch(NamedTuple):
    """A batch as the data workers hand it over.

    ``images``: per sample, the JPEG file as a 1-D uint8 tensor, or the (3, H, W) uint8 pixels of
    an image decoded in the worker. ``boxes``: (B, 4) train crops (top, left, height, width) in
    the full image's pixels, or None for the eval resize and centre crop."""

    images: list[torch.Tensor]
    boxes: torch.Tensor | None

    def pin_memory(self) -> EncodedBatch:
        """What the DataLoader calls with ``pin_memory=True`` (CUDA), for a faster copy to the device."""
        return EncodedBatch([x.pin_memory() for x in self.images],
                            None if self.boxes is None else self.boxes.pin_memory())


def require_cuda(device: str | torch.device) -> None:
    """Refuse ``--gpu-decode`` off CUDA: on a CPU the workers' PIL decoding is the fast path."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        why = "no CUDA device is available" if not torch.cuda.is_available() else f"the device is {device}"
        raise GpuDecodeUnavailable(f"--gpu-decode needs CUDA, but {why}; leave the flag out to decode "
                                   "JPEGs on the CPU in the data workers")


class DevicePreprocess:
    """Core's train or eval transform, split at the JPEG bytes: :meth:`encode` in the data workers,
    :meth:`collate` to batch, and :meth:`apply` on the device."""

    def __init__(self, model_or_size, train: bool):
        steps = image_transform(model_or_size, train=train).transforms
        unknown = [s for s in steps if not isinstance(s, (RandomResizedCrop, Resize, CenterCrop, MaybeConvertMode,
                                                          MaybeToTensor, Normalize))]
        if unknown:  # e.g. colour jitter from an augmentation config: do not silently drop it
            raise TypeError(f"the device transform does not implement {unknown}")
        self.crop = next((s for s in steps if isinstance(s, RandomResizedCrop)), None)
        self.resize = Compose([s for s in steps if isinstance(s, (Resize, CenterCrop))])
        norm = next(s for s in steps if isinstance(s, Normalize))
        self.to_float = UInt8ToFloat(norm.mean, norm.std)

    def encode(self, source: bytes | str | os.PathLike) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
        """Worker side: (encoded JPEG or decoded pixels, train crop box). The crop is drawn from
        torch's RNG exactly where the PIL transform draws it, so seeded augmentation stays seeded.
        Raises what :func:`decode_image` raises for an unreadable file, so callers skip it the same way."""
        data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        img = Image.open(io.BytesIO(data))  # reads the header only
        if img.format == "JPEG" and img.mode in _DEVICE_JPEG_MODES and data.endswith(_JPEG_END):
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            img = decode_image(data)
            pixels = PILToTensor()(img)
        box = self.crop.get_params(img, self.crop.scale, self.crop.ratio) if self.crop is not None else None
        return pixels, box

    @staticmethod
    def collate(encoded: list[tuple[torch.Tensor, tuple[int, int, int, int] | None]]) -> EncodedBatch:
        boxes = [box for _, box in encoded]
        return EncodedBatch([pixels for pixels, _ in encoded],
                            None if boxes[0] is None else torch.tensor(boxes, dtype=torch.int64))

    def apply(self, batch: EncodedBatch, device: str | torch.device, dtype: torch.dtype = torch.float32
              ) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
        """Device side, skipping what cannot be decoded: (the normalised batch of the images that
        decoded, or None; their positions in ``batch``; (position, why) of the others). A float
        (3, H, W) tensor is taken as already preprocessed and passed through."""
        pixels = decode_on(batch.images, torch.device(device))
        kept = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
        failed = [(i, p) for i, p in enumerate(pixels) if isinstance(p, str)]
        if not kept:
            return None, kept, failed
        boxes, c = (batch.boxes.tolist() if batch.boxes is not None else None), self.crop
        # images differ in size until cropped, so the resizes run one by one; the normalisation batched
        crops = {i: self.resize(pixels[i]) if boxes is None else
                 F.resized_crop(pixels[i], *boxes[i], c.size, c.interpolation, antialias=c.antialias)
                 for i in kept if not pixels[i].is_floating_point()}
        normed = self.to_float(torch.stack(list(crops.values()))).to(dtype) if crops else None
        if len(crops) == len(kept):
            return normed, kept, failed
        by_position = dict(zip(crops, normed)) if crops else {}
        return torch.stack([by_position.get(i, pixels[i].to(dtype)) for i in kept]), kept, failed


def decode_on(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | str]:
    """(3, H, W) pixels on ``device``: JPEG bytes (1-D uint8) in one batched decode, pixels moved.
    A JPEG no decoder takes is, in its place, the reason why."""
    jpegs = [i for i, x in enumerate(images) if x.ndim == 1]
    out: list[torch.Tensor | str] = [x.to(device, non_blocking=True) if x.ndim == 3 else "" for x in images]
    if jpegs:
        try:
            decoded = decode_jpeg([images[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # the batched call gives no partial results: find the bad file
            decoded = [_decode_one(images[i], device) for i in jpegs]
        for i, x in zip(jpegs, decoded):
            out[i] = x
    return out


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | str:
    """One JPEG the batched decoder refused: PIL's decoder, or why the image cannot be decoded."""
    try:
        return PILToTensor()(decode_image(data.numpy().tobytes())).to(device)
    except Exception as exc:  # PIL raises many types for bad bytes
        return f"cannot decode as an image ({type(exc).__name__}: {exc})"

