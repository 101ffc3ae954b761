"""The declarative benchmark registry: what each benchmark reads, and whether it is on disk.

The registry is a TOML file (``benchmarks.toml`` ships in the package; ``--registry``
points at another). Paths in it are relative to the data root, so one registry
serves any machine. Loading checks every entry up front, so a typo fails with
the entry's name rather than halfway through a run.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from biocap_core.errors import BioCAPError
from biocap_core.taxonomy import LABEL_TYPES

TASKS = ("zeroshot", "inquire", "retrieval")
TABLES = ("zeroshot", "retrieval")
#: Selector that means every benchmark whose data are on disk.
ALL = "all"


class RegistryError(BioCAPError, ValueError):
    """The registry file is malformed, or a benchmark name is unknown."""


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

    def annotation_files(self) -> list[tuple[str, str]]:
        """(subset name, relative path) of every annotation table this benchmark reads."""
        if self.task == "inquire":
            return [("queries", self.queries)] if self.queries else []
        if self.subsets:
            return [(s.name, s.annotation) for s in self.subsets]
        return [(self.name, self.annotation)]

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


_FIELDS = set(Benchmark.__dataclass_fields__)


def _entry(raw: dict, source: str) -> Benchmark:
    name = raw.get("name")
    where = f"{source}: benchmark {name!r}"
    if not name:
        raise RegistryError(f"{source}: a [[benchmark]] entry has no name")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    missing = [f for f in ("title", "task", "table", "columns") if f not in raw]
    if missing:
        raise RegistryError(f"{where}: missing field(s) {missing}")
    if raw["task"] not in TASKS:
        raise RegistryError(f"{where}: task {raw['task']!r} is not one of {TASKS}")
    if raw["table"] not in TABLES:
        raise RegistryError(f"{where}: table {raw['table']!r} is not one of {TABLES}")
    subsets = tuple(Subset(**s) for s in raw.get("subsets", ()))
    bench = Benchmark(**{**raw, "tags": tuple(raw.get("tags", ())), "subsets": subsets,
                         "columns": dict(raw["columns"])})
    if bench.task == "zeroshot":
        if bool(bench.annotation) == bool(bench.subsets):
            raise RegistryError(f"{where}: a zeroshot benchmark needs either annotation or subsets")
        if bench.label_type not in LABEL_TYPES:
            raise RegistryError(f"{where}: label_type {bench.label_type!r} is not one of {LABEL_TYPES}")
    elif bench.task == "retrieval" and not bench.annotation:
        raise RegistryError(f"{where}: a retrieval benchmark needs annotation")
    elif bench.task == "inquire" and not (bench.candidates or bench.hf_dataset):
        raise RegistryError(f"{where}: an inquire benchmark needs candidates and/or hf_dataset")
    return bench


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Benchmark]:
    """Benchmarks by name, in file order, from ``path`` or the shipped ``benchmarks.toml``."""
    if path is None:
        source = "benchmarks.toml (shipped)"
        text = resources.files("biocap_eval").joinpath("benchmarks.toml").read_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read the registry: {exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from exc
    out: dict[str, Benchmark] = {}
    for entry in raw.get("benchmark", []):
        bench = _entry(entry, source)
        if bench.name in out:
            raise RegistryError(f"{source}: benchmark {bench.name!r} is defined twice")
        out[bench.name] = bench
    if not out:
        raise RegistryError(f"{source}: no [[benchmark]] entries")
    return out


def selector_list(items: Iterable[str]) -> list[str]:
    """Selectors from command-line items, each of which may hold several separated by commas."""
    return [s.strip() for item in items for s in item.split(",") if s.strip()]


def select(registry: dict[str, Benchmark], selectors: Iterable[str]) -> list[Benchmark]:
    """Benchmarks named by selectors: ``all``, a name, a task (``zeroshot``...) or a tag (``paper``, ``toy``);
    an item may hold several, separated by commas.

    ``all`` keeps registry order and means every benchmark (the caller drops those not on disk).
    """
    chosen: dict[str, Benchmark] = {}
    for sel in selector_list(selectors):
        if sel == ALL:
            matches = list(registry.values())
        elif sel in registry:
            matches = [registry[sel]]
        else:
            matches = [b for b in registry.values() if sel == b.task or sel in b.tags]
        if not matches:
            tags = sorted({t for b in registry.values() for t in b.tags})
            raise RegistryError(
                f"unknown benchmark {sel!r}; choose from 'all', tasks {list(TASKS)}, tags {tags} "
                f"or names {list(registry)}"
            )
        for b in matches:
            chosen.setdefault(b.name, b)
    return [b for b in registry.values() if b.name in chosen]


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
