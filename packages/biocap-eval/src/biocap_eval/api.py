"""Python API: evaluate a model (loaded or by name) on registry benchmarks, without writing files.

For scripts and training loops; ``biocap-eval run`` adds result files, skipping and reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from biocap_eval.registry import load_registry, select
from biocap_eval.runner import ModelSpec, RunOptions, open_encoder
from biocap_eval.tasks import Settings, TaskResult, task_of


def evaluate(
    model,
    benchmarks: Iterable[str] = ("toy",),
    data_root: str | os.PathLike = ".",
    *,
    pretrained: str | None = None,
    head: str = "tax",
    settings: Settings = Settings(),
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    gpu_decode: bool = False,
) -> dict[str, TaskResult]:
    """Results by benchmark name. ``model`` is a BioCAP (kept on its device) or anything
    :func:`biocap_core.checkpoints.load_model` takes; selectors as in ``biocap-eval run``.
    ``gpu_decode`` (CUDA only) decodes JPEGs on the device, as ``--gpu-decode``."""
    if isinstance(model, (str, os.PathLike, Mapping)):
        spec = ModelSpec(
            model if isinstance(model, Mapping) else str(model),
            pretrained,
            head=head,
            precision=precision,
        )
        model = None
    else:
        spec = ModelSpec("<loaded model>", head=head, precision=precision)
    options = RunOptions(
        Path(data_root),
        device=device,
        batch_size=batch_size,
        workers=workers,
        cache_dir=cache_dir,
        gpu_decode=gpu_decode,
    )
    enc = open_encoder(spec, options, model, log=lambda _: None)
    chosen = select(load_registry(registry), list(benchmarks))
    return {b.name: task_of(b).evaluate(b, Path(data_root), enc, settings) for b in chosen}
