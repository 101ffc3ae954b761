"""The one dataset of images to embed: biocap-eval's benchmark images, biocap-predict's inputs and
the training loop's zero-shot images; and the one loop that embeds them (:func:`encoded_batches`).

DataLoader workers decode (JPEGs drafted to the crop size) and resize and crop to uint8 tensors; each
batch is normalised to float where the model runs (:func:`~biocap_core.preprocess.split_eval_transform`),
so a quarter of the bytes cross between processes and to the device. An image that cannot be read
or decoded does not stop the loader: its item carries why instead of a tensor, and each batch hands
those to the caller, which skips and reports them (eval's ``counts.unreadable``, predict's skipped
inputs) or fails (eval's ``--strict``).

With ``gpu_decode`` the workers only read the files: JPEGs cross as their encoded bytes and the device
decodes, resizes and normalises each batch (:mod:`biocap_core.gpu_decode`); other formats are decoded
in the worker and cross as full-size pixels. A JPEG that only the device finds undecodable is reported
at its position like any other.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import PILToTensor

from biocap_core.gpu_decode import DevicePreprocess, EncodedBatch
from biocap_core.precision import autocast
from biocap_core.preprocess import decode_image, short_side, split_eval_transform

#: What an image can be given as: a file, its encoded bytes, a PIL image, or a tensor already
#: preprocessed for the model ((3, H, W), passed through as it is).
ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, torch.Tensor]


class _Unreadable(Exception):
    """Why one source gave no image (caught in :meth:`ImageFiles.__getitem__`, never raised to callers)."""


class ImageFiles(Dataset):
    """Images for one model; item ``i`` is ``(i, uint8 (3, H, W) tensor)`` or ``(i, why it has none)``.

    ``sources`` may be any sequence, read in the workers (e.g. rows of a Hugging Face dataset). With
    ``gpu_decode`` the tensor of an item is what :class:`~biocap_core.gpu_decode.DevicePreprocess`
    takes: a JPEG's bytes (1-D), an image's full-size pixels (uint8), or a preprocessed tensor (float).
    ``draft`` False decodes every JPEG at full size (slower for large photos; the crop's pixels then
    equal those of OpenCLIP's transform on the fully decoded image, as pybioclip computes them).
    """

    def __init__(self, sources: Sequence[ImageSource], model_or_size, gpu_decode: bool = False,
                 draft: bool = True):
        self.sources = sources
        self.to_uint8, self.to_float = split_eval_transform(model_or_size)
        size = model_or_size if isinstance(model_or_size, (int, tuple)) else model_or_size.image_size
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (H, W) of the crops
        self.draft_size = short_side(size) if draft else None
        self.device_prep = DevicePreprocess(model_or_size, train=False) if gpu_decode else None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str]:
        try:
            image = self._decode(i)
        except _Unreadable as exc:
            return i, str(exc)
        if isinstance(image, torch.Tensor):
            return i, image
        return i, PILToTensor()(image) if self.device_prep is not None else self.to_uint8(image)

    def _decode(self, i: int) -> Image.Image | torch.Tensor:
        """Source ``i`` as an RGB image (a tensor source as it is, a file's JPEG bytes with
        ``gpu_decode``); raises :class:`_Unreadable`."""
        try:
            source = self.sources[i]
            if isinstance(source, torch.Tensor):
                if source.ndim != 3 or source.shape[0] != 3:
                    raise _Unreadable(f"a tensor input must be a preprocessed (3, H, W) image, "
                                      f"not shape {tuple(source.shape)}")
                return source
            if isinstance(source, Image.Image):
                return source.convert("RGB")
            if isinstance(source, (bytes, bytearray, str, os.PathLike)) and self.device_prep is not None:
                return self.device_prep.encode(source)[0]
            if isinstance(source, (bytes, bytearray, str, os.PathLike)):
                return decode_image(bytes(source) if isinstance(source, bytearray) else source,
                                    draft_size=self.draft_size)
            raise _Unreadable(f"unsupported image input of type {type(source).__name__}")
        except _Unreadable:
            raise
        except FileNotFoundError as exc:
            raise _Unreadable("no such image file") from exc
        except Exception as exc:  # PIL raises many exception types on bad data; reading and decoding only
            raise _Unreadable(f"cannot decode as an image ({type(exc).__name__}: {exc})") from exc


@dataclass
class ImageBatch:
    """One batch: the positions that decoded, their images, and the positions that did not, with why.

    ``images`` as :func:`image_batches` yields it: the normalised float (B, 3, H, W) batch on the
    device, or None when no image decoded. Between the workers and :func:`image_batches` it is what
    crosses the process boundary: the uint8 (or, mixed with preprocessed tensors, float) batch, the
    number of the shared slot a worker stacked the uint8 batch into, or with ``gpu_decode`` the
    packed images the device decodes."""

    positions: list[int]
    images: torch.Tensor | _Packed | int | None  # int: the shared slot the worker wrote them to
    unreadable: list[tuple[int, str]]

    def pin_memory(self) -> "ImageBatch":
        """What the DataLoader calls with ``pin_memory=True`` (CUDA), for a faster copy to the device."""
        if isinstance(self.images, (torch.Tensor, _Packed)):
            self.images = self.images.pin_memory()
        return self


@dataclass
class _Packed:
    """A ``gpu_decode`` batch between processes: the JPEG files end to end in one tensor, so a batch
    crosses in one shared-memory segment instead of one per image; other images as they are."""

    jpegs: torch.Tensor  # uint8, every JPEG file of the batch, in order
    sizes: list[int]  # per image, its JPEG's length in ``jpegs``, or -1: the next of ``others``
    others: list[torch.Tensor]

    @classmethod
    def of(cls, tensors: list[torch.Tensor]) -> "_Packed":
        jpeg = [t.ndim == 1 for t in tensors]
        joined = [t for t, j in zip(tensors, jpeg) if j]
        return cls(torch.cat(joined) if joined else torch.empty(0, dtype=torch.uint8),
                   [len(t) if j else -1 for t, j in zip(tensors, jpeg)], [t for t, j in zip(tensors, jpeg) if not j])

    def unpack(self) -> list[torch.Tensor]:
        """The batch as :class:`~biocap_core.gpu_decode.DevicePreprocess` takes it (views, no copies)."""
        parts = iter(self.jpegs.split([n for n in self.sizes if n >= 0]))
        others = iter(self.others)
        return [next(parts) if n >= 0 else next(others) for n in self.sizes]

    def pin_memory(self) -> "_Packed":
        return _Packed(self.jpegs.pin_memory(), self.sizes, [t.pin_memory() for t in self.others])


class _Collate:
    """Stacks a batch: uint8 when every image is (normalised later, where the model runs), else float
    with the uint8 ones normalised here (a batch mixing decoded images and preprocessed tensors).
    With ``stack`` False (``gpu_decode``) they are packed as they are, for the device to decode.

    With ``slots`` (a ring of shared uint8 batches, made before the workers start), a uint8 batch is
    stacked into the slot of its batch number and only that number crosses to the main process:
    receiving a batch then costs 0.4-0.5 instead of 1.1-1.5 ms (64x64 crops, batch 32, measured),
    as no shared-memory segment is made, sent and mapped per batch."""

    def __init__(self, to_float: Callable[[torch.Tensor], torch.Tensor], stack: bool = True,
                 slots: torch.Tensor | None = None):
        self.to_float, self.stack, self.slots = to_float, stack, slots

    def __call__(self, items: list[tuple[int, torch.Tensor | str]]) -> ImageBatch:
        good = [(i, t) for i, t in items if isinstance(t, torch.Tensor)]
        tensors = [t for _, t in good]
        unreadable = [(i, why) for i, why in items if isinstance(why, str)]
        if not tensors:
            return ImageBatch([], None, unreadable)
        if not self.stack:
            return ImageBatch([i for i, _ in good], _Packed.of(tensors), unreadable)
        if any(t.dtype != torch.uint8 for t in tensors):
            tensors = [self.to_float(t[None])[0] if t.dtype == torch.uint8 else t for t in tensors]
        elif self.slots is not None and all(t.shape == self.slots.shape[2:] for t in tensors):
            slot = items[0][0] // self.slots.shape[1] % self.slots.shape[0]
            torch.stack(tensors, out=self.slots[slot, :len(tensors)])
            return ImageBatch([i for i, _ in good], slot, unreadable)
        return ImageBatch([i for i, _ in good], torch.stack(tensors), unreadable)


#: Images worker processes hand over at a time (as many whole model batches as fit, at least one): each
#: hand-over costs the main process about 0.35-0.55 ms whatever its size (DataLoader's queues and their
#: threads: 0.34 ms for 32 64x64 images, 0.53 for 128, measured), 3% of a toy-model batch of 32 on one
#: CPU thread, so small model batches are handed over several at a time and cut where the model runs.
HANDOVER_IMAGES = 128


def image_batches(images: ImageFiles, batch_size: int, workers: int = 0,
                  device: torch.device | str = "cpu") -> Iterator[ImageBatch]:
    """Batches of ``batch_size`` images in order (fewer where some did not decode), decoded by ``workers``
    processes (or, with the images' ``gpu_decode``, on ``device``), normalised on ``device``."""
    # uint8 across processes: 1 worker delivers 3,800 instead of 2,300 64x64 images/s, and the main process
    # waits 90-115 instead of 140-230 ms in next() over 2,000 images while it runs the toy model (measured)
    device = torch.device(device)
    per_load = batch_size * max(1, HANDOVER_IMAGES // batch_size) if workers else batch_size
    prefetch = (4 if per_load == batch_size else 2) if workers else None
    slots = None
    if workers and device.type == "cpu" and images.device_prep is None:
        # a batch is in use from the worker's write until the main process has normalised its last cut
        # (a copy, in _cut) and asks for the next; at most prefetch x workers later batches are dispatched
        # by then. About the shared memory the per-batch segments of as many batches in flight would take.
        slots = torch.empty(workers * prefetch + 2, per_load, 3, *images.size, dtype=torch.uint8).share_memory_()
    loader = DataLoader(images, batch_size=per_load, num_workers=workers, shuffle=False,
                        collate_fn=_Collate(images.to_float, stack=images.device_prep is None, slots=slots),
                        pin_memory=device.type == "cuda", prefetch_factor=prefetch)
    for batch in loader:
        if isinstance(batch.images, int):
            batch.images = slots[batch.images, :len(batch.positions)]
        if images.device_prep is not None and batch.images is not None:
            decoded, kept, failed = images.device_prep.apply(EncodedBatch(batch.images.unpack(), None), device)
            batch.unreadable += [(batch.positions[j], why) for j, why in failed]
            batch.positions, batch.images = [batch.positions[j] for j in kept], decoded
        yield from _cut(batch, batch_size, images.to_float, device)


def _cut(batch: ImageBatch, size: int, to_float: Callable[[torch.Tensor], torch.Tensor],
         device: torch.device) -> Iterator[ImageBatch]:
    """``batch`` as batches of ``size`` decoded images on ``device``, normalised; an unreadable image goes
    with the batch its position falls in (the last, after the last decoded one)."""
    if batch.images is None:
        yield batch
        return
    starts = range(0, len(batch.positions), size)
    ends = [batch.positions[min(s + size, len(batch.positions)) - 1] for s in starts]
    unreadable: list[list[tuple[int, str]]] = [[] for _ in starts]
    for position, why in batch.unreadable:
        unreadable[min(bisect.bisect_left(ends, position), len(ends) - 1)].append((position, why))
    for s, bad in zip(starts, unreadable):
        images = batch.images[s:s + size].to(device, non_blocking=True)
        if images.dtype == torch.uint8:  # a new float tensor: the shared slot is not read again for it
            images = to_float(images)
        yield ImageBatch(batch.positions[s:s + size], images, bad)


@torch.no_grad()
def encoded_batches(model, images: ImageFiles, heads: Sequence[str] = ("tax",), batch_size: int = 64,
                    workers: int = 0, device: torch.device | str = "cpu", precision: str = "fp32",
                    normalize: bool = True) -> Iterator[tuple[ImageBatch, dict[str, torch.Tensor]]]:
    """Each batch of :func:`image_batches` with the model's float32 embeddings of its decoded images,
    one per head in ``heads`` (the backbone runs once); ``{}`` when none of the batch decoded. The
    callers (zero-shot's matrix of embeddings, biocap-predict's stream of them) decide what an
    unreadable image means; the model is used as it is (put it in eval mode first)."""
    for batch in image_batches(images, batch_size, workers, device):
        feats: dict[str, torch.Tensor] = {}
        if batch.images is not None:
            with autocast(device, precision):
                out = model.encode_image_heads(batch.images, heads, normalize=normalize)
            feats = {head: f.float() for head, f in out.items()}
        yield batch, feats
