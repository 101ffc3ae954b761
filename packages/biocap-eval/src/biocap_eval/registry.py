"""The declarative benchmark registry: which benchmarks there are and what each reads.

The registry is a TOML file (``benchmarks.toml`` ships in the package; ``--registry``
points at another). Paths in it are relative to the data root, so one registry
serves any machine. Loading checks every entry up front, so a typo fails with
the entry's name rather than halfway through a run.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from biocap_core.errors import BioCAPError
from biocap_eval.benchmark import Benchmark, Subset
from biocap_eval.tasks import TABLES, TASKS

#: Selector that means every benchmark whose data are on disk.
ALL = "all"


class RegistryError(BioCAPError, ValueError):
    """The registry file is malformed, or a benchmark name is unknown."""


_FIELDS = set(Benchmark.__dataclass_fields__)


def _entry(raw: dict, source: str) -> Benchmark:
    name = raw.get("name")
    where = f"{source}: benchmark {name!r}"
    if not name:
        raise RegistryError(f"{source}: a [[benchmark]] entry has no name")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RegistryError(
            f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}"
        )
    missing = [f for f in ("title", "task", "table", "columns") if f not in raw]
    if missing:
        raise RegistryError(f"{where}: missing field(s) {missing}")
    task = TASKS.get(raw["task"])
    if task is None:
        raise RegistryError(f"{where}: task {raw['task']!r} is not one of {list(TASKS)}")
    if raw["table"] not in TABLES:
        raise RegistryError(f"{where}: table {raw['table']!r} is not one of {list(TABLES)}")
    subsets = tuple(Subset(**s) for s in raw.get("subsets", ()))
    bench = Benchmark(
        **{
            **raw,
            "tags": tuple(raw.get("tags", ())),
            "subsets": subsets,
            "columns": dict(raw["columns"]),
        }
    )
    problem = task.check(bench)
    if problem:
        raise RegistryError(f"{where}: {problem}")
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
    """Benchmarks named by selectors: ``all``, a name, a task (``zeroshot``...) or a tag (``paper``,
    ``toy``); an item may hold several, separated by commas.

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
