"""The evaluation tasks by name: the one registry of what ``task`` in ``benchmarks.toml`` may be.

A task is a module that defines ``TASK``, a :class:`~biocap_eval.tasks.base.Task` (its status
and evaluate functions, the settings its numbers depend on, what a registry entry of it needs
and its report table), plus one entry in :data:`TASKS`. The registry loader, the runner and
the report read everything they need about a task from here.
"""

from __future__ import annotations

from biocap_eval.benchmark import Benchmark
from biocap_eval.tasks import inquire, retrieval, zeroshot
from biocap_eval.tasks.base import EvalError, ReportTable, Settings, Task, TaskResult

#: The tasks by name, in report order.
TASKS: dict[str, Task] = {t.name: t for t in (zeroshot.TASK, inquire.TASK, retrieval.TASK)}

#: The report's tables by name, with their titles, in report order (from the tasks' tables).
TABLES: dict[str, str] = {t.table.name: t.table.title for t in TASKS.values()}


def task_of(bench: Benchmark) -> Task:
    """The task that runs ``bench``; an unknown task is an :class:`EvalError` naming the others."""
    try:
        return TASKS[bench.task]
    except KeyError:
        raise EvalError(
            f"{bench.name}: unknown task {bench.task!r}; known: {', '.join(TASKS)}"
        ) from None


def recorded_settings(settings: Settings, bench: Benchmark) -> dict:
    """The settings ``bench``'s numbers depend on, as JSON-able values (stored in its result)."""
    return {**task_of(bench).recorded(settings, bench), "skip_missing": settings.skip_missing}


__all__ = [
    "TABLES",
    "TASKS",
    "EvalError",
    "ReportTable",
    "Settings",
    "Task",
    "TaskResult",
    "inquire",
    "recorded_settings",
    "retrieval",
    "task_of",
    "zeroshot",
]
