"""Run benchmarks for one model and write one result JSON per (model, benchmark).

A result is finished when its JSON exists and was made by the same model
(name, weights source, head, precision) with the same task settings; finished
pairs are skipped (the model is not even loaded when all are), unless ``force``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from biocap_core.errors import BioCAPError, UnwritableFolder
from biocap_core.fileio import atomic_write, writable_folder
from biocap_core.gpu_decode import require_cuda
from biocap_core.runtime import default_device, default_precision, versions
from biocap_eval.benchmark import Benchmark, Status
from biocap_eval.embedding import Encoder
from biocap_eval.registry import load_registry, select, selector_list
from biocap_eval.tasks import Settings, TaskResult, recorded_settings, task_of

RESULT_VERSION = 1


def status(bench: Benchmark, data_root: Path) -> Status:
    """Whether ``bench`` can run from ``data_root`` (see :class:`~biocap_eval.benchmark.Status`)."""
    return task_of(bench).status(bench, data_root)


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how to name it in results.

    ``model`` is anything :func:`biocap_core.checkpoints.load_model` takes; ``precision`` None is
    settled by :meth:`settled` for the device (amp on a GPU, fp32 on the CPU, as the original).
    """

    model: str | Mapping[str, Any]
    pretrained: str | None = None
    head: str = "tax"
    precision: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if not isinstance(self.model, str):
            label = "config"
        else:
            label = Path(self.model).stem if Path(self.model).is_file() else self.model
        if self.pretrained:
            label += "/" + (
                Path(self.pretrained).stem if Path(self.pretrained).is_file() else self.pretrained
            )
        return label + ("#caption" if self.head == "caption" else "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._#@+-]+", "_", self.label).strip("_")

    def identity(self) -> dict:
        """What makes two runs the same model; a weights file adds its size and mtime."""
        out = {
            "model": self.model,
            "pretrained": self.pretrained,
            "head": self.head,
            "precision": self.precision,
        }
        for key in ("model", "pretrained"):
            value = getattr(self, key)
            if isinstance(value, str) and Path(value).is_file():
                st = Path(value).stat()
                out[f"{key}_file"] = {
                    "path": str(Path(value).resolve()),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                }
        return out


def result_path(out_dir: Path, spec: ModelSpec, bench: Benchmark) -> Path:
    return out_dir / spec.slug / f"{bench.name}.json"


def is_finished(path: Path, spec: ModelSpec, bench: Benchmark, settings: Settings) -> bool:
    if not path.is_file():
        return False
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return done.get("model", {}).get("identity") == spec.identity() and done.get(
        "settings"
    ) == recorded_settings(settings, bench)


@dataclass
class RunOptions:
    """Where a run reads and writes, and how it encodes. ``device`` None: the given model's device,
    else CUDA when available; ``out_dir`` None only for :func:`biocap_eval.api.evaluate` (no files);
    ``gpu_decode``: JPEGs decoded on the device (CUDA only)."""

    data_root: Path
    out_dir: Path | None = None
    device: str | None = None
    batch_size: int = 64
    workers: int = 0
    cache_dir: Path | None = None
    force: bool = False
    progress: bool = False
    gpu_decode: bool = False


@dataclass
class RunSummary:
    """Result files of a run (written now or finished earlier) and the benchmarks that failed, with
    why."""

    paths: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def settled(
    spec: ModelSpec, options: RunOptions, model: torch.nn.Module | None = None
) -> tuple[ModelSpec, RunOptions]:
    """``spec`` and ``options`` with what was left None chosen: the device is the given model's,
    else CUDA when available; the precision amp on a GPU, fp32 on the CPU (as the original).
    ``gpu_decode`` off CUDA is refused here (:class:`~biocap_core.errors.GpuDecodeUnavailable`),
    before any work.
    """
    if options.device is None:
        device = str(next(model.parameters()).device) if model is not None else default_device()
        options = replace(options, device=device)
    if options.gpu_decode:
        require_cuda(options.device)
    return replace(spec, precision=spec.precision or default_precision(options.device)), options


def runnable(
    selectors: Iterable[str],
    data_root: Path,
    skip_missing: bool = False,
    registry: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> list[Benchmark]:
    """The benchmarks ``selectors`` choose (see :func:`~biocap_eval.registry.select`) that can run.

    One named explicitly always runs, so bad input fails loudly; one chosen by ``all``, a task or a
    tag runs only when its data are on disk, else it is logged as not run. None left is an error.
    """
    selectors = selector_list(selectors)
    reg = load_registry(registry)
    explicit = set(selectors) & set(reg)
    chosen = []
    for bench in select(reg, selectors):
        st = status(bench, data_root)
        if bench.name in explicit or st.runnable(skip_missing):
            chosen.append(bench)
        else:
            log(f"{bench.name}: not run ({st.state}: {st.detail})")
    if not chosen:
        raise BioCAPError(
            f"none of {selectors} can run from data root {Path(data_root).resolve()} "
            "(see `biocap-eval list --data-root ...`)"
        )
    return chosen


def run_selected(
    spec: ModelSpec,
    selectors: Iterable[str],
    settings: Settings,
    options: RunOptions,
    registry: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """``biocap-eval run``: the :func:`runnable` benchmarks of ``selectors``, each to its result
    file; a failing one is logged in the summary and the others still run."""
    benchmarks = runnable(selectors, options.data_root, settings.skip_missing, registry, log)
    return run(spec, benchmarks, settings, options, log=log, keep_going=True)


def open_encoder(
    spec: ModelSpec,
    options: RunOptions,
    model: torch.nn.Module | None = None,
    log: Callable[[str], None] = print,
) -> Encoder:
    """The encoder a run's benchmarks share: ``model`` as given (it stays on its device), or
    ``spec`` loaded through biocap-core's loader: the one way both the CLI and the Python API load a
    model.
    """
    spec, options = settled(spec, options, model)
    if model is None:
        from biocap_core.checkpoints import load_model

        log(f"loading {spec.model}" + (f" ({spec.pretrained})" if spec.pretrained else ""))
        model = load_model(
            spec.model, spec.pretrained or None, device=options.device, precision=spec.precision
        )
    return Encoder(
        model,
        head=spec.head,
        device=options.device,
        precision=spec.precision,
        batch_size=options.batch_size,
        workers=options.workers,
        cache_dir=options.cache_dir,
        progress=options.progress,
        gpu_decode=options.gpu_decode,
    )


def run(
    spec: ModelSpec,
    benchmarks: list[Benchmark],
    settings: Settings,
    options: RunOptions,
    log: Callable[[str], None] = print,
    model=None,
    keep_going: bool = False,
) -> RunSummary:
    """Evaluate ``spec`` on ``benchmarks``, writing one result JSON each.

    ``model`` may be an already loaded BioCAP; otherwise ``spec`` is loaded (:func:`open_encoder`),
    and only if some benchmark needs running. With ``keep_going`` a benchmark whose input is bad
    is logged in ``failed`` and the others still run; otherwise its error propagates.
    """
    spec, options = settled(spec, options, model)
    summary, todo = RunSummary(), []
    for bench in benchmarks:
        path = result_path(options.out_dir, spec, bench)
        if not options.force and is_finished(path, spec, bench, settings):
            log(
                f"{spec.label} / {bench.name}: finished earlier ({path}); skipped (--force"
                " re-runs it)"
            )
            summary.paths[bench.name] = path
        else:
            todo.append((bench, path))
    if not todo:
        return summary
    results_folder(options.out_dir)
    enc = open_encoder(spec, options, model, log)
    for bench, path in todo:
        log(f"{spec.label} / {bench.name}: running {bench.task}")
        start, encoded_before = time.perf_counter(), enc.encoded
        try:
            result = task_of(bench).evaluate(bench, options.data_root, enc, settings)
        except BioCAPError as exc:
            if not keep_going:
                raise
            summary.failed[bench.name] = str(exc)
            log(f"{spec.label} / {bench.name}: FAILED: {exc}")
            continue
        seconds = time.perf_counter() - start
        try:
            write_result(
                path,
                spec,
                bench,
                settings,
                result,
                enc,
                options,
                seconds,
                enc.encoded - encoded_before,
            )
        except OSError as exc:  # e.g. the disk filled up since the results folder was checked
            raise BioCAPError(f"cannot write the result {path}: {exc.strerror or exc}") from exc
        summary.paths[bench.name] = path
        shown = ", ".join(f"{k} {v:.2f}" for k, v in list(result.metrics.items())[:4])
        unreadable = result.counts.get("unreadable", 0)
        skipped = (
            f", {unreadable} undecodable image(s) skipped, named in the result"
            if unreadable
            else ""
        )
        log(
            f"{spec.label} / {bench.name}: {shown} ({seconds:.1f} s, {enc.encoded - encoded_before}"
            f" images encoded{skipped}) -> {path}"
        )
    return summary


def results_folder(path: Path) -> None:
    """Make sure results can be written under ``path`` before any model is loaded or image encoded,
    failing with one line that says what is in the way rather than an OSError deep in a write."""
    try:
        writable_folder(path)
    except UnwritableFolder as exc:
        raise BioCAPError(f"cannot create the results folder {path}: {exc.reason}") from exc


def write_result(
    path: Path,
    spec: ModelSpec,
    bench: Benchmark,
    settings: Settings,
    result: TaskResult,
    enc: Encoder,
    options: RunOptions,
    seconds: float,
    encoded: int,
) -> None:
    doc = {
        "format": RESULT_VERSION,
        "model": {"label": spec.label, "identity": spec.identity(), "fingerprint": enc.fingerprint},
        "benchmark": bench.to_dict(),
        "settings": recorded_settings(settings, bench),
        "metrics": result.metrics,
        "counts": result.counts,
        "details": result.details,
        "run": {
            "data_root": str(Path(options.data_root).resolve()),
            "device": str(options.device),
            "batch_size": options.batch_size,
            "workers": options.workers,
            "gpu_decode": options.gpu_decode,
            "seconds": round(seconds, 3),
            "images_encoded": encoded,
            "cache_dir": str(options.cache_dir) if options.cache_dir else None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        },
        "versions": versions("biocap-eval"),
    }
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
