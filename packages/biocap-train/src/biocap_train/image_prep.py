"""What the training data path does to each image, behind one interface for both places it can
decode: :class:`WorkerDecode` (PIL in the data workers, the default) and, with ``--gpu-decode``,
biocap-core's :class:`~biocap_core.gpu_decode.DevicePreprocess` (the workers hand over JPEG bytes
and train crops; the device decodes).

Either way the image's random crop is drawn in the worker from torch's seeded RNG, at the same
point, so the batches and exact resume do not depend on where the image is decoded.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from biocap_core.gpu_decode import DevicePreprocess
from biocap_core.preprocess import decode_image, image_transform, short_side

from biocap_train.config import TrainConfig


class ImagePrep(Protocol):
    """An image's way from its encoded bytes to the model's input."""

    def encode(self, data: bytes) -> Any:
        """Data worker, one image: what crosses to the main process. Raises on bytes that do not
        decode (PIL raises many types), so the caller skips the sample."""

    def collate(self, items: list[Any]) -> Any:
        """Data worker: a micro-batch of :meth:`encode`'s results."""

    def apply(self, batch: Any, device: torch.device, dtype: torch.dtype
              ) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
        """Main process: (the (B, 3, H, W) batch of the images that made it, on ``device`` in
        ``dtype``, or None; their positions; (position, why) of those that did not)."""


class WorkerDecode:
    """Core's transform run in the data workers on the image PIL decodes (a JPEG drafted to
    ``draft_size``, the model's crop, when given): the batch crosses ready to train on."""

    def __init__(self, model_or_size, train: bool, draft_size: int | None = None):
        self.transform, self.draft_size = image_transform(model_or_size, train=train), draft_size

    def encode(self, data: bytes) -> torch.Tensor:
        return self.transform(decode_image(data, draft_size=self.draft_size))

    @staticmethod
    def collate(items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)

    @staticmethod
    def apply(batch: torch.Tensor, device: torch.device, dtype: torch.dtype
              ) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
        return batch.to(device, dtype=dtype, non_blocking=True), list(range(len(batch))), []


def image_prep(cfg: TrainConfig, model, train: bool) -> ImagePrep:
    """The run's image preparation: :class:`WorkerDecode`, drafting JPEGs to the model's crop
    unless ``--no-draft-decode``; with ``--gpu-decode`` core's :class:`DevicePreprocess`."""
    if cfg.gpu_decode:
        return DevicePreprocess(model, train=train)
    return WorkerDecode(model, train, short_side(model.image_size) if cfg.draft_decode else None)
