"""Zero-shot classification pieces shared by training (in-loop top-1) and biocap-eval.

As the original (BioCLIP's zero-shot script): class order is the order of
first appearance, each class's text embedding is the re-normalised mean of
its normalised template embeddings, logits are scaled cosine similarities.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
import torch.nn.functional as F
from tqdm import tqdm

from biocap_core import schemas
from biocap_core.errors import ImageError, SchemaError
from biocap_core.imagefiles import ImageFiles, ImageSource, encoded_batches
from biocap_core.precision import autocast
from biocap_core.taxonomy import TEMPLATES, label_texts


def read_labels(csv: str | os.PathLike, label_type: str) -> tuple[pl.DataFrame, list[str]]:
    """An annotation table and the label text of each row, without looking at images."""
    table = schemas.CLASSIFICATION.read(csv)
    return table, label_texts(table, label_type, source=str(csv))


@dataclass
class ClassificationSet:
    """Images and integer labels of a zero-shot benchmark, with its class texts."""

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def from_csv(
        cls,
        csv: str | os.PathLike,
        image_root: str | os.PathLike,
        label_type: str,
        skip_missing: bool = False,
    ) -> ClassificationSet:
        """Read an annotation CSV in any of the original layouts; images are
        ``image_root/filepath``.

        Missing images are an error naming the CSV and the first missing files, or,
        with ``skip_missing``, dropped and listed in :attr:`skipped`; their classes
        stay candidates, so the label space is the annotation's whatever is on disk.
        """
        table, names = read_labels(csv, label_type)
        root = Path(image_root)
        paths = [root / p for p in table["filepath"]]
        present = [p.is_file() for p in paths]
        skipped = [str(p) for p, ok in zip(paths, present) if not ok]
        if skipped and not skip_missing:
            raise SchemaError(
                f"{csv}: {len(skipped)} of {len(paths)} image(s) missing under {root}; first:"
                f" {skipped[:3]} (use --skip-missing to evaluate the rest)"
            )
        if "class_idx" in table.columns:
            order = sorted(set(zip(table["class_idx"].cast(int).to_list(), names)))
            classnames = [name for _, name in order]
        else:
            classnames = list(dict.fromkeys(names))
        index = {name: i for i, name in enumerate(classnames)}
        kept = [(p, index[n]) for p, n, ok in zip(paths, names, present) if ok]
        if not kept:
            raise SchemaError(f"{csv}: no images to evaluate (empty table, or every image missing)")
        return cls([p for p, _ in kept], [y for _, y in kept], classnames, str(csv), skipped)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode (no dropout) for the block, then the caller's mode again (e.g. inside a training
    loop)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_images(
    model,
    images: Sequence[ImageSource] | ImageFiles,
    head: str = "tax",
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    on_unreadable: Callable[[int, str], None] | None = None,
    gpu_decode: bool = False,
) -> torch.Tensor:
    """L2-normalised image embeddings (N, D) with the chosen head, float32 on the CPU.

    ``images`` is a list of files (or any :data:`~biocap_core.imagefiles.ImageSource`) or an
    :class:`~biocap_core.imagefiles.ImageFiles`. An image that cannot be decoded is handed to
    ``on_unreadable(position, why)`` and its row left zero; without ``on_unreadable`` it is an
    :class:`~biocap_core.errors.ImageError` naming it. ``gpu_decode``: JPEGs are decoded on
    ``device`` (see :mod:`~biocap_core.imagefiles`).
    """
    if not isinstance(images, ImageFiles):
        images = ImageFiles(images, model, gpu_decode=gpu_decode)
    positions, feats = [], []
    with eval_mode(model):
        batches = encoded_batches(model, images, (head,), batch_size, workers, device, precision)
        for batch, encoded in tqdm(
            batches,
            desc="images",
            unit="batch",
            disable=not progress,
            leave=False,
            total=-(-len(images) // batch_size),
        ):
            for position, why in batch.unreadable:
                if on_unreadable is None:
                    source = images.sources[position]
                    name = source if isinstance(source, (str, os.PathLike)) else f"image {position}"
                    raise ImageError(f"{name}: {why}")
                on_unreadable(position, why)
            if encoded:
                feats.append(encoded[head])
                positions += batch.positions
    out = torch.zeros(len(images), model.visual.proj.shape[1])
    if feats:
        out[positions] = torch.cat(feats).cpu()
    return out


@torch.no_grad()
def classifier_weights(
    model,
    classnames: Sequence[str],
    templates: Iterable[str] = TEMPLATES,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """(D, C) zero-shot classifier: per class, the re-normalised mean of normalised template
    embeddings."""
    templates = list(templates)
    tokenizer = model.tokenizer()
    texts = [t.format(c) for c in classnames for t in templates]
    feats = []
    with eval_mode(model):
        for i in tqdm(
            range(0, len(texts), batch_size), desc="class texts", disable=not progress, leave=False
        ):
            with autocast(device, precision):
                tokens = tokenizer(texts[i : i + batch_size]).to(device)
                feats.append(model.encode_text(tokens, normalize=True).float())
    per_class = torch.cat(feats).view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1).T.cpu()


def topk_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 3, 5)
) -> dict[int, float]:
    """Share of samples whose label is among the k highest logits (k capped at the class count)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[k] = (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


def per_class_recall(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Top-1 recall of each class (NaN for classes with no sample)."""
    pred = logits.argmax(dim=1)
    hits = torch.zeros(n_classes).index_add_(0, labels, (pred == labels).float())
    counts = torch.zeros(n_classes).index_add_(
        0, labels, torch.ones_like(labels, dtype=torch.float)
    )
    return hits / counts
