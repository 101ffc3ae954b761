"""On-disk cache of image embeddings, so benchmarks over the same images encode them once.

Embeddings live under ``ROOT/<model fingerprint>/``: one safetensors chunk per
encoding call, with the keys of its rows in the file's metadata. The model
fingerprint hashes the weights, the architecture, the preprocessing, the head
and the precision, so any change to what produces an embedding misses the cache.
A file's key is its resolved path with its size and modification time, so an
edited image is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from biocap_core.fileio import atomic_write
from biocap_core.preprocess import preprocess_cfg


def model_fingerprint(model, head: str, precision: str) -> str:
    """Hex digest identifying the embeddings a model produces (weights, config, preprocessing, head,
    precision)."""
    h = hashlib.blake2b(digest_size=16)
    cfg = preprocess_cfg(model)
    h.update(
        json.dumps(
            {
                "model_cfg": model.model_cfg,
                "preprocess": repr(cfg),
                "head": head,
                "precision": precision,
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def file_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: resolved path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    """Embeddings of one model fingerprint, looked up by key."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.dir = Path(root) / fingerprint
        self._index: dict[str, tuple[Path, int]] | None = None

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            for chunk in sorted(self.dir.glob("*.safetensors")):
                with safe_open(str(chunk), framework="pt") as f:
                    keys = json.loads(f.metadata()["keys"])
                self._index.update({k: (chunk, i) for i, k in enumerate(keys)})
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

    def get(self, keys: list[str]) -> dict[int, torch.Tensor]:
        """Embeddings found for ``keys``, by position in ``keys``."""
        index = self._load_index()
        wanted: dict[Path, list[tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            if key in index:
                chunk, row = index[key]
                wanted.setdefault(chunk, []).append((pos, row))
        found = {}
        for chunk, pairs in wanted.items():
            with safe_open(str(chunk), framework="pt") as f:
                emb = f.get_tensor("embeddings")
            for pos, row in pairs:
                found[pos] = emb[row]
        return found

    def put(self, keys: list[str], embeddings: torch.Tensor) -> None:
        """Store new embeddings as one chunk (written atomically)."""
        if not keys:
            return
        if len(keys) != embeddings.shape[0]:
            raise ValueError(f"{len(keys)} keys for {embeddings.shape[0]} embeddings")
        self.dir.mkdir(parents=True, exist_ok=True)
        chunk = self.dir / f"{uuid.uuid4().hex}.safetensors"
        tensor = embeddings.detach().float().cpu().contiguous()
        atomic_write(
            chunk,
            lambda tmp: save_file(
                {"embeddings": tensor}, str(tmp), metadata={"keys": json.dumps(keys)}
            ),
        )
        index = self._load_index()
        index.update({k: (chunk, i) for i, k in enumerate(keys)})
