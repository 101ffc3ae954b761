"""Splitting units across jobs: ``--num-shards/--shard-index`` or a SLURM job array.

Every app that spreads work over jobs (captioning shards, building shards, predicting over a
collection) splits it here, so the flags, the SLURM variables and torchrun's ``RANK``/``WORLD_SIZE``
mean the same everywhere.

Job ``i`` of ``n`` takes units ``i, i+n, i+2n, ...`` of the sorted unit list,
so every unit belongs to exactly one job and the jobs get near-equal shares
whatever the count.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from biocap_core.errors import BioCAPError

T = TypeVar("T")


class JobSpecError(BioCAPError, ValueError):
    """The job split is inconsistent (index out of range, half-given, bad SLURM variables)."""


def job_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """(num_jobs, job_index) of a SLURM array task or a torchrun rank, or None outside both.

    In a SLURM array the index is ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` and the count
    ``SLURM_ARRAY_TASK_COUNT`` (or MAX - MIN + 1), so ``--array=1-12`` works. Under ``torchrun``
    (no array) the job is ``RANK`` of ``WORLD_SIZE``.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        if "RANK" in env and "WORLD_SIZE" in env:
            try:
                return int(env["WORLD_SIZE"]), int(env["RANK"])
            except ValueError as exc:
                raise JobSpecError(f"cannot read torchrun's RANK/WORLD_SIZE: {exc}") from exc
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        low = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        if "SLURM_ARRAY_TASK_COUNT" in env:
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            count = int(env["SLURM_ARRAY_TASK_MAX"]) - low + 1
    except (KeyError, ValueError) as exc:
        raise JobSpecError(f"cannot read the SLURM array variables: {exc}") from exc
    return count, task - low


def resolve_job(
    num_shards: int | None, shard_index: int | None, env: Mapping[str, str] = os.environ
) -> tuple[int, int]:
    """The (num_jobs, job_index) to use: explicit flags win over SLURM, default one job."""
    if (num_shards is None) != (shard_index is None):
        raise JobSpecError("give both --num-shards and --shard-index, or neither")
    if num_shards is not None:
        job = (num_shards, shard_index)
    else:
        job = job_from_env(env) or (1, 0)
    count, index = job
    if count < 1 or not 0 <= index < count:
        raise JobSpecError(f"job index {index} is outside 0..{count - 1}")
    return count, index


def select(units: Sequence[T], num_jobs: int, job_index: int) -> list[T]:
    """This job's share of the units."""
    return list(iter_select(units, num_jobs, job_index))


def iter_select(units: Iterable[T], num_jobs: int, job_index: int) -> Iterator[T]:
    """This job's share of a stream of units (a list of millions of paths read line by line), the
    same share :func:`select` takes of the list."""
    return itertools.islice(units, job_index, None, num_jobs)
