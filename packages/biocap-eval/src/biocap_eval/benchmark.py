"""What one benchmark is (an entry of the registry) and whether it can run from a data root.

These are plain data, shared by the registry that loads them (:mod:`biocap_eval.registry`) and
the tasks that run them (:mod:`biocap_eval.tasks`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Subset:
    """One annotation file of a zero-shot benchmark that averages several (Camera Trap)."""

    name: str
    annotation: str


@dataclass(frozen=True)
class Benchmark:
    """One registry entry; see the comment at the top of ``benchmarks.toml`` for the fields."""

    name: str
    title: str
    task: str
    table: str
    columns: dict[str, str]
    tags: tuple[str, ...] = ()
    annotation: str | None = None
    images: str | None = None
    label_type: str | None = None
    subsets: tuple[Subset, ...] = ()
    queries: str | None = None
    candidates: str | None = None
    hf_dataset: str | None = None
    hf_split: str = "test"

    def image_root(self, data_root: Path, annotation: str | None = None) -> Path:
        """Folder the image paths are relative to (default: the annotation file's folder)."""
        if self.images is not None:
            return data_root / self.images
        return (data_root / (annotation or self.annotation)).parent

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if v not in (None, (), {})}
        out["tags"] = list(self.tags)
        if self.subsets:
            out["subsets"] = [s.__dict__ for s in self.subsets]
        return out


def hf_available() -> bool:
    """Whether the optional ``datasets`` package (``biocap-eval[hf]``) is importable."""
    return importlib.util.find_spec("datasets") is not None


@dataclass
class Status:
    """Whether a benchmark can run from a data root.

    ``state`` is ``ready`` (annotations and every image), ``partial`` (some
    images missing: runs with ``--skip-missing``), ``no-images`` (annotations
    only), ``hub`` (INQUIRE candidates will come from the Hugging Face Hub),
    ``missing`` (annotation file absent) or ``invalid`` (an annotation file
    does not parse; ``detail`` says why).
    """

    state: str
    rows: int = 0
    images_found: int = 0
    images_expected: int = 0
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    # "hub" benchmarks download the whole dataset: they run only when named, never as part of "all".
    RUNNABLE = ("ready",)

    def runnable(self, skip_missing: bool = False) -> bool:
        return self.state in self.RUNNABLE or (skip_missing and self.state == "partial")
