"""Zero-shot classification pieces shared by training (in-loop top-1) and biocap-eval.

As the original (BioCLIP's zero-shot script): class order is the order of
first appearance, each class's text embedding is the re-normalised mean of
its normalised template embeddings, logits are scaled cosine similarities.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from biocap_core import schemas
from biocap_core.errors import SchemaError
from biocap_core.precision import autocast
from biocap_core.preprocess import decode_image, image_transform, short_side
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
    ) -> "ClassificationSet":
        """Read an annotation CSV in any of the original layouts; images are ``image_root/filepath``.

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
                f"{csv}: {len(skipped)} of {len(paths)} image(s) missing under {root}; first: {skipped[:3]} "
                "(use --skip-missing to evaluate the rest)"
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


class ImageFiles(Dataset):
    """Images from files through the one preprocessing; decoding drafts JPEGs to the crop size."""

    def __init__(self, paths: Sequence[Path], transform: Callable, draft_size: int | None = None):
        self.paths, self.transform, self.draft_size = list(paths), transform, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(decode_image(self.paths[i], draft_size=self.draft_size))


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode (no dropout) for the block, then the caller's mode again (e.g. inside a training loop)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_images(
    model,
    images: Sequence[Path] | Dataset,
    head: str = "tax",
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised image embeddings (N, D) with the chosen head, float32 on the CPU.

    ``images`` is a list of files, or any Dataset of preprocessed image tensors.
    """
    if not isinstance(images, Dataset):
        images = ImageFiles(images, image_transform(model, train=False), draft_size=short_side(model.image_size))
    device = torch.device(device)
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers, shuffle=False,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    feats = []
    with eval_mode(model):
        for batch in tqdm(loader, desc="images", unit="batch", disable=not progress, leave=False):
            with autocast(device, precision):
                feats.append(model.encode_image(batch.to(device, non_blocking=True), normalize=True, head=head).float())
    if not feats:
        return torch.empty(0, model.visual.proj.shape[1])
    return torch.cat(feats).cpu()


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
    """(D, C) zero-shot classifier: per class, the re-normalised mean of normalised template embeddings."""
    templates = list(templates)
    tokenizer = model.tokenizer()
    texts = [t.format(c) for c in classnames for t in templates]
    feats = []
    with eval_mode(model):
        for i in tqdm(range(0, len(texts), batch_size), desc="class texts", disable=not progress, leave=False):
            with autocast(device, precision):
                tokens = tokenizer(texts[i:i + batch_size]).to(device)
                feats.append(model.encode_text(tokens, normalize=True).float())
    per_class = torch.cat(feats).view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1).T.cpu()


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 3, 5)) -> dict[int, float]:
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
    counts = torch.zeros(n_classes).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
    return hits / counts
