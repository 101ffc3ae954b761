"""Image and text embeddings for the tasks: batched, on any device and precision, cached on disk.

Images come as files (every local benchmark) or as rows of a Hugging Face
dataset (INQUIRE-Rerank from the Hub); both go through biocap-core's one eval
preprocessing and the chosen head. Only images missing from the cache are encoded.
An image that cannot be decoded (a truncated JPEG, an HTML error page saved as
``.jpg``) does not stop the encoding: it is reported back so the task can drop it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from safetensors import SafetensorError
from torch.utils.data import Dataset

from biocap_core.preprocess import decode_image, image_transform, short_side
from biocap_core.zeroshot import classifier_weights, encode_images

from biocap_core.embedding_cache import EmbeddingCache, file_key, model_fingerprint

log = logging.getLogger("biocap_eval")


class Images(Dataset):
    """Preprocessed images that never raise on bad image data.

    An image that cannot be read or decoded is replaced by a blank one and its
    position is flagged in :attr:`failed`, a shared-memory tensor, so the flag
    reaches the main process from DataLoader workers too and one bad file costs
    no re-run of the batch. PIL raises many exception types on bad data, hence
    the broad catch; it covers reading and decoding only, never the transform.
    """

    def __init__(self, n: int, transform: Callable, draft_size: int | None = None):
        self.transform, self.draft_size = transform, draft_size
        self.failed = torch.zeros(n, dtype=torch.bool).share_memory_()

    def source(self, i: int) -> bytes | Path:
        raise NotImplementedError

    def decode(self, i: int) -> Image.Image:
        return decode_image(self.source(i), draft_size=self.draft_size)

    def why(self, i: int) -> str:
        """Why image ``i`` cannot be decoded (it is decoded again: only called for flagged images)."""
        try:
            self.decode(i)
        except Exception as exc:  # any error PIL raises on bad data: see the class docstring
            return f"{type(exc).__name__}: {exc}"
        return "could not be decoded in a loader worker"

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            image = self.decode(i)
        except Exception:  # any error PIL raises on bad data: see the class docstring
            self.failed[i] = True
            image = Image.new("RGB", (8, 8))
        return self.transform(image)


class FileImages(Images):
    """Image files."""

    def __init__(self, paths: Sequence[Path], transform: Callable, draft_size: int | None = None):
        super().__init__(len(paths), transform, draft_size)
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, i: int) -> Path:
        return self.paths[i]


class HFImages(Images):
    """Images stored as encoded bytes in rows of a Hugging Face dataset (``image`` column, not decoded)."""

    def __init__(self, dataset, rows: Sequence[int], transform: Callable, draft_size: int | None = None):
        super().__init__(len(rows), transform, draft_size)
        self.dataset, self.rows = dataset, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def source(self, i: int) -> bytes | Path:
        image = self.dataset[self.rows[i]]["image"]
        return image["bytes"] if image.get("bytes") is not None else Path(image["path"])


@dataclass
class ImageEmbeddings:
    """Embeddings of a list of images, and which of them could not be decoded (their rows are zero)."""

    vectors: torch.Tensor  # (N, D), L2-normalised
    unreadable: dict[int, str]  # position in the list -> why it could not be decoded

    def readable(self) -> list[int]:
        return [i for i in range(self.vectors.shape[0]) if i not in self.unreadable]


@dataclass
class Encoder:
    """A loaded model with the settings every task encodes with.

    ``cache_dir`` None turns the embedding cache off. The cache only saves time,
    so a cache that cannot be written (read-only, disk full) is warned about
    once and then left alone for the rest of the run.
    """

    model: torch.nn.Module
    head: str = "tax"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    cache_dir: str | os.PathLike | None = None
    progress: bool = False

    def __post_init__(self):
        self.transform = image_transform(self.model, train=False)
        self.draft_size = short_side(self.model.image_size)
        self.encoded = 0  # images run through the model (cache misses), for reports and tests
        self.cache_writable = True

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the embeddings this encoder produces (hashes the weights once)."""
        return model_fingerprint(self.model, self.head, self.precision)

    @cached_property
    def cache(self) -> EmbeddingCache | None:
        return EmbeddingCache(self.cache_dir, self.fingerprint) if self.cache_dir is not None else None

    def image_files(self, paths: Sequence[Path]) -> ImageEmbeddings:
        """L2-normalised embeddings of image files."""
        keys = [file_key(p) for p in paths] if self.cache is not None else []
        return self._cached(keys, len(paths), lambda missing: FileImages(
            [paths[i] for i in missing], self.transform, self.draft_size))

    def hf_images(self, dataset, rows: Sequence[int], keys: Sequence[str]) -> ImageEmbeddings:
        """Embeddings of the images in ``rows`` of a Hugging Face dataset, cached under ``keys``."""
        return self._cached(list(keys) if self.cache is not None else [], len(rows), lambda missing: HFImages(
            dataset, [rows[i] for i in missing], self.transform, self.draft_size))

    def _cached(self, keys: list[str], n: int, dataset_of: Callable[[list[int]], Images]) -> ImageEmbeddings:
        found = self.cache.get(keys) if self.cache is not None else {}
        missing = [i for i in range(n) if i not in found]
        out = torch.empty(n, self.embed_dim)
        unreadable: dict[int, str] = {}
        if found:
            positions = list(found)
            out[positions] = torch.stack([found[i] for i in positions])
        if missing:
            dataset = dataset_of(missing)
            fresh = self.encode(dataset)
            failed = dataset.failed.tolist()
            unreadable = {missing[j]: dataset.why(j) for j, bad in enumerate(failed) if bad}
            fresh[dataset.failed] = 0.0  # the blank stand-ins' embeddings mean nothing
            out[missing] = fresh
            good = [j for j, bad in enumerate(failed) if not bad]
            self.encoded += len(good)
            if self.cache is not None:
                self._store([keys[missing[j]] for j in good], fresh[good])
        return ImageEmbeddings(out, unreadable)

    def _store(self, keys: list[str], embeddings: torch.Tensor) -> None:
        """Add embeddings to the cache, or warn once that it cannot be written and stop trying."""
        if not self.cache_writable:
            return
        try:
            self.cache.put(keys, embeddings)
        except (OSError, SafetensorError) as exc:  # safetensors reports I/O errors (disk full) as its own type
            self.cache_writable = False
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("warning: embedding cache %s cannot be written (%s); going on without it",
                        self.cache.dir, reason)

    def encode(self, dataset: Dataset) -> torch.Tensor:
        """Run a dataset of preprocessed images through the model, batched; (N, D) float32 on the CPU."""
        return encode_images(self.model, dataset, head=self.head, batch_size=self.batch_size,
                             workers=self.workers, device=self.device, precision=self.precision,
                             progress=self.progress)

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of raw texts (no template)."""
        return self.classifier(texts, ("{}",)).T

    def classifier(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(D, C) zero-shot classifier: per class, the re-normalised mean of its template embeddings."""
        return classifier_weights(self.model, classnames, templates, batch_size=max(self.batch_size, 256),
                                  device=self.device, precision=self.precision, progress=self.progress)

    @property
    def embed_dim(self) -> int:
        return self.model.visual.proj.shape[1]

