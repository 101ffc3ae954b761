"""Image and text embeddings for the tasks: batched, on any device and precision, cached on disk.

Images come as files (every local benchmark) or as rows of a Hugging Face
dataset (INQUIRE-Rerank from the Hub); both go through biocap-core's one eval
preprocessing and the chosen head. Only images missing from the cache are encoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from biocap_core.preprocess import decode_image, image_transform, short_side
from biocap_core.zeroshot import ImageFiles, classifier_weights, encode_images

from biocap_core.embedding_cache import EmbeddingCache, file_key, model_fingerprint


class HFImages(Dataset):
    """Images stored as encoded bytes in rows of a Hugging Face dataset (``image`` column, not decoded)."""

    def __init__(self, dataset, rows: Sequence[int], transform: Callable, draft_size: int | None = None):
        self.dataset, self.rows, self.transform, self.draft_size = dataset, list(rows), transform, draft_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.dataset[self.rows[i]]["image"]
        data = image["bytes"] if image.get("bytes") is not None else Path(image["path"]).read_bytes()
        return self.transform(decode_image(data, draft_size=self.draft_size))


@dataclass
class Encoder:
    """A loaded model with the settings every task encodes with.

    ``cache_dir`` None turns the embedding cache off.
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

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the embeddings this encoder produces (hashes the weights once)."""
        return model_fingerprint(self.model, self.head, self.precision)

    @cached_property
    def cache(self) -> EmbeddingCache | None:
        return EmbeddingCache(self.cache_dir, self.fingerprint) if self.cache_dir is not None else None

    def image_files(self, paths: Sequence[Path]) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of image files."""
        keys = [file_key(p) for p in paths] if self.cache is not None else []
        return self._cached(keys, len(paths), lambda missing: ImageFiles(
            [paths[i] for i in missing], self.transform, self.draft_size))

    def hf_images(self, dataset, rows: Sequence[int], keys: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings of the images in ``rows`` of a Hugging Face dataset, cached under ``keys``."""
        return self._cached(list(keys) if self.cache is not None else [], len(rows), lambda missing: HFImages(
            dataset, [rows[i] for i in missing], self.transform, self.draft_size))

    def _cached(self, keys: list[str], n: int, dataset_of: Callable[[list[int]], Dataset]) -> torch.Tensor:
        found = self.cache.get(keys) if self.cache is not None else {}
        missing = [i for i in range(n) if i not in found]
        out = torch.empty(n, self.embed_dim)
        if found:
            positions = list(found)
            out[positions] = torch.stack([found[i] for i in positions])
        if missing:
            fresh = self.encode(dataset_of(missing))
            out[missing] = fresh
            self.encoded += len(missing)
            if self.cache is not None:
                self.cache.put([keys[i] for i in missing], fresh)
        return out

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

