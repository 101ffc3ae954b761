"""Image and text embeddings for the tasks: batched, on any device and precision, cached on disk.

Images come as files (every local benchmark) or as rows of a Hugging Face
dataset (INQUIRE-Rerank from the Hub); both go through biocap-core's one image
dataset (:mod:`biocap_core.imagefiles`) and the chosen head. Only images missing
from the cache are encoded. An image that cannot be decoded (a truncated JPEG, an
HTML error page saved as ``.jpg``) does not stop the encoding: it is reported back
so the task can drop it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError

from biocap_core.embedding_cache import EmbeddingCache, file_key, model_fingerprint
from biocap_core.imagefiles import ImageSource
from biocap_core.zeroshot import classifier_weights, encode_images

log = logging.getLogger("biocap_eval")


class HubImages(Sequence):
    """The encoded image of each of ``rows`` of a Hugging Face dataset (``image`` column, not
    decoded), read when a loader worker asks for it: the sources of a core :class:`ImageFiles`."""

    def __init__(self, dataset, rows: Sequence[int]):
        self.dataset, self.rows = dataset, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> bytes | Path:
        image = self.dataset[self.rows[i]]["image"]
        return image["bytes"] if image.get("bytes") is not None else Path(image["path"])


@dataclass
class ImageEmbeddings:
    """Embeddings of a list of images, and which of them could not be decoded (their rows are
    zero)."""

    vectors: torch.Tensor  # (N, D), L2-normalised
    unreadable: dict[int, str]  # position in the list -> why it could not be decoded

    def readable(self) -> list[int]:
        return [i for i in range(self.vectors.shape[0]) if i not in self.unreadable]


@dataclass
class Encoder:
    """A loaded model with the settings every task encodes with.

    ``cache_dir`` None turns the embedding cache off. The cache only saves time,
    so a cache that cannot be written (read-only, disk full) is warned about
    once and then left alone for the rest of the run. ``gpu_decode``: JPEGs are
    decoded on ``device`` (runs refuse it off CUDA: :func:`biocap_eval.runner.settled`).
    """

    model: torch.nn.Module
    head: str = "tax"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    cache_dir: str | os.PathLike | None = None
    progress: bool = False
    gpu_decode: bool = False

    def __post_init__(self):
        self.encoded = 0  # images run through the model (cache misses), for reports and tests
        self.cache_writable = True

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the embeddings this encoder produces (hashes the weights once)."""
        return model_fingerprint(self.model, self.head, self.precision)

    @cached_property
    def cache(self) -> EmbeddingCache | None:
        return (
            EmbeddingCache(self.cache_dir, self.fingerprint) if self.cache_dir is not None else None
        )

    def image_files(self, paths: Sequence[Path]) -> ImageEmbeddings:
        """L2-normalised embeddings of image files."""
        keys = [file_key(p) for p in paths] if self.cache is not None else []
        return self._cached(keys, len(paths), lambda missing: [paths[i] for i in missing])

    def hf_images(self, dataset, rows: Sequence[int], keys: Sequence[str]) -> ImageEmbeddings:
        """Embeddings of the images in ``rows`` of a Hugging Face dataset, cached under ``keys``."""
        return self._cached(
            list(keys) if self.cache is not None else [],
            len(rows),
            lambda missing: HubImages(dataset, [rows[i] for i in missing]),
        )

    def _cached(
        self, keys: list[str], n: int, sources_of: Callable[[list[int]], Sequence[ImageSource]]
    ) -> ImageEmbeddings:
        found = self.cache.get(keys) if self.cache is not None else {}
        missing = [i for i in range(n) if i not in found]
        out = torch.empty(n, self.embed_dim)
        unreadable: dict[int, str] = {}
        if found:
            positions = list(found)
            out[positions] = torch.stack([found[i] for i in positions])
        if missing:
            failed: dict[int, str] = {}
            fresh = self.encode(
                sources_of(missing), on_unreadable=failed.__setitem__
            )  # failed rows are zero
            unreadable = {missing[j]: why for j, why in failed.items()}
            out[missing] = fresh
            good = [j for j in range(len(missing)) if j not in failed]
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
        except (
            OSError,
            SafetensorError,
        ) as exc:  # safetensors reports I/O errors (disk full) as its own type
            self.cache_writable = False
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning(
                "warning: embedding cache %s cannot be written (%s); going on without it",
                self.cache.dir,
                reason,
            )

    def encode(
        self, images: Sequence[ImageSource], on_unreadable: Callable[[int, str], None] | None = None
    ) -> torch.Tensor:
        """Run images through the model, batched; (N, D) float32 on the CPU (see core's
        ``encode_images``)."""
        return encode_images(
            self.model,
            images,
            head=self.head,
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device,
            precision=self.precision,
            progress=self.progress,
            on_unreadable=on_unreadable,
            gpu_decode=self.gpu_decode,
        )

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of raw texts (no template)."""
        return self.classifier(texts, ("{}",)).T

    def classifier(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(D, C) zero-shot classifier: per class, the re-normalised mean of its template
        embeddings."""
        return classifier_weights(
            self.model,
            classnames,
            templates,
            batch_size=max(self.batch_size, 256),
            device=self.device,
            precision=self.precision,
            progress=self.progress,
        )

    @property
    def embed_dim(self) -> int:
        return self.model.visual.proj.shape[1]
