"""Training checkpoints: written atomically, the newest K kept, found again for ``--resume latest``.

A checkpoint holds only tensors and plain containers, so biocap-core's
``read_checkpoint`` loads it with ``weights_only=True``: the model
(``state_dict``, both heads), optimizer and loss-scaler state, the step, the
model config, the run config and every rank's data-stream position.

A write goes to ``.step_N.pt.tmp-PID`` and is renamed when complete. A kill
mid-write leaves that temp file behind (a whole checkpoint's size):
:func:`remove_partial_checkpoints` deletes such files when a run starts. A
checkpoint that cannot be read is renamed ``step_N.pt.unreadable`` by
:func:`set_aside`, out of ``--resume latest``'s and pruning's way.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from biocap_core.checkpoints import read_checkpoint
from biocap_core.errors import CheckpointError
from biocap_core.fileio import atomic_write

from biocap_train import distributed
from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo

_NAME = re.compile(r"^step_(\d+)\.pt$")
_PARTIAL = re.compile(r"^\.step_\d+\.pt\.tmp-\d+$")


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, quota, permissions); names the file and the cause."""


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


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the temp files of checkpoint writes that a kill interrupted; returns them.

    Call only before this run writes a checkpoint: a temp file is then never one being written.
    """
    folder = checkpoint_dir(run_dir)
    partial = sorted(p for p in folder.iterdir() if _PARTIAL.match(p.name)) if folder.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to ``step_N.pt.unreadable``: kept for inspection, but no longer a
    checkpoint that ``--resume latest`` would pick or that pruning would keep instead of a good one."""
    aside = path.with_name(path.name + ".unreadable")
    path.rename(aside)
    return aside


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as ``checkpoints/step_N.pt`` (temp file + rename), then drop all but the newest ``keep``.

    Raises :class:`CheckpointWriteError` naming the file and the cause if the write fails: on a full disk
    torch only says ``[enforce fail at inline_container.cc:...] unexpected pos ...``.
    """
    path = checkpoint_path(run_dir, step)
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as exc:
        raise CheckpointWriteError(_write_failure(path, state, exc)) from exc
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _write_failure(path: Path, state: dict[str, Any], exc: BaseException) -> str:
    """Why writing ``path`` failed, with the free space against the checkpoint's size."""
    need = _tensor_bytes(state)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    space = f"{_size(free)} free in {path.parent}, " if free is not None else ""
    space += f"the checkpoint needs about {_size(need)}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"{os.strerror(exc.errno).lower()} ({space})"
    elif free is not None and free < need:
        why = f"no space left on device ({space})"
    elif isinstance(exc, OSError):
        why = f"{exc.strerror or exc} ({space})"
    else:
        why = (f"torch failed writing it ({str(exc).splitlines()[0]}); a full disk or quota is the usual "
               f"cause ({space})")
    return (f"cannot write checkpoint {path}: {why}. Earlier checkpoints are untouched; make room, then "
            "rerun with --resume latest")


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def resume_checkpoint(cfg: TrainConfig, info: DistInfo, say) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint ``--resume`` names and its contents; (None, None) for a fresh run.

    ``--resume latest`` skips an unreadable newest checkpoint (a bad disk, a copy cut short), saying
    so, sets it aside and takes the one before; rank 0 decides, so every rank resumes from the same
    one. If none is readable the run stops rather than silently starting over.
    """
    if not cfg.resume:
        return None, None
    if cfg.resume != "latest":
        path = Path(cfg.resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint file")
        return path, read_checkpoint(path)
    read: dict[str, Any] = {}  # rank 0's checkpoint, read while choosing it

    def newest_readable() -> Path | None:
        path, unreadable = None, []
        for _, candidate in reversed(list_checkpoints(cfg.run_dir)):
            try:
                read["ckpt"] = read_checkpoint(candidate)
            except CheckpointError as exc:
                unreadable.append((candidate, exc))
                continue
            path = candidate
            break
        if unreadable and path is None:
            raise CheckpointError(f"--resume latest: no checkpoint of {cfg.run_dir} is readable; newest: "
                                  f"{unreadable[0][1]}")
        for bad, exc in unreadable:
            say(f"warning: {exc}; set aside as {set_aside(bad).name}, resuming from {path.name} instead")
        return path

    path = distributed.decided_on_main(info, newest_readable)
    ckpt = read.get("ckpt")
    if ckpt is None and path is not None:
        ckpt = read_checkpoint(path)
    return path, ckpt
