"""Training checkpoints: written atomically, the newest K kept, found again for ``--resume latest``.

A checkpoint holds only tensors and plain containers, so biocap-core's
``read_checkpoint`` loads it with ``weights_only=True``: the model
(``state_dict``, both heads), optimizer and loss-scaler state, the step, the
model config, the run config and every rank's data-stream position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from biocap_core.fileio import atomic_write

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints of a run, oldest first (temp files of an interrupted write are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as ``checkpoints/step_N.pt`` (temp file + rename), then drop all but the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path
