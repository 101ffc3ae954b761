"""Process-group setup for torchrun and SLURM, and the few collectives the trainer needs.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; under ``srun`` without
torchrun the SLURM variables are used instead (``MASTER_ADDR``/``MASTER_PORT``
must then be exported by the batch script). One process per device; NCCL on
CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_ranks() -> tuple[int, int, int]:
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in env]
        if missing:
            raise RuntimeError(
                f"SLURM job with {env['SLURM_NTASKS']} tasks but {missing} unset; export e.g. "
                "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) MASTER_PORT=29500, "
                "or launch with torchrun"
            )
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init(device: str | None = None) -> DistInfo:
    """Join the process group if launched as several processes; pick this process's device."""
    rank, world_size, local_rank = _env_ranks()
    if device:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world_size, local_rank, dev)


def set_cpu_threads(info: DistInfo, workers: int) -> None:
    """On CPU, give compute the cores the data workers leave free (unless OMP_NUM_THREADS is set):
    oversubscribed OpenMP threads spin and can make a step ten times slower."""
    if info.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.enabled else 1))
    torch.set_num_threads(max(1, per_process - workers))


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


T = TypeVar("T")


@contextlib.contextmanager
def failing_together(info: DistInfo) -> Iterator[None]:
    """Around work that only some ranks do (``if info.is_main: ...``): an exception it raises on
    any rank is raised on every rank, which a rank that went on alone would otherwise wait for
    forever at its next collective. The ranks meet at the end of the block (one gather), so it
    also takes the place of a barrier."""
    error = None
    try:
        yield
    except Exception as exc:  # raised again below, on every rank
        error = exc
    errors = [e for e in gather_objects(info, _sendable(error)) if e is not None]
    if error is not None:
        raise error
    if errors:
        raise errors[0]


def _sendable(error: Exception | None) -> Exception | None:
    """``error`` as the other ranks can receive it: itself if it survives pickling (which a
    collective does to it), else a RuntimeError with its type and message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # e.g. an exception whose __init__ takes other arguments than its args
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def decided_on_main(info: DistInfo, decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 only, and its result on every rank (an exception on every rank,
    see :func:`failing_together`)."""
    result = None
    with failing_together(info):
        if info.is_main:
            result = decide()
    return broadcast_object(info, result)


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_tensor(info: DistInfo, tensor: torch.Tensor) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def min_int(info: DistInfo, value: int) -> int:
    """The smallest ``value`` over all ranks."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())
