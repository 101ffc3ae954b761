"""Python API: evaluate a model (loaded or by name) on registry benchmarks, without writing files.

For scripts and training loops; ``biocap-eval run`` adds result files, skipping and reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from biocap_eval.embedding import Encoder
from biocap_eval.registry import load_registry, select
from biocap_eval.runner import TASK_MODULES, default_device, default_precision
from biocap_eval.tasks import Settings, TaskResult


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
) -> dict[str, TaskResult]:
    """Results by benchmark name. ``model`` is a BioCAP (kept on its device) or anything
    :func:`biocap_core.checkpoints.load_model` takes; selectors as in ``biocap-eval run``."""
    if isinstance(model, (str, Path, dict)):
        from biocap_core.checkpoints import load_model

        device = device or default_device()
        precision = precision or default_precision(device)
        model = load_model(str(model) if isinstance(model, Path) else model, pretrained, device=device,
                           precision=precision)
    else:
        device = device or str(next(model.parameters()).device)
        precision = precision or default_precision(device)
    enc = Encoder(model, head=head, device=device, precision=precision, batch_size=batch_size, workers=workers,
                  cache_dir=cache_dir)
    chosen = select(load_registry(registry), list(benchmarks))
    return {b.name: TASK_MODULES[b.task].evaluate(b, Path(data_root), enc, settings) for b in chosen}
