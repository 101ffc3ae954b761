"""What every evaluation task shares: :class:`Task` (what a task module registers), the
:class:`Settings` that change what tasks compute, :class:`TaskResult` and the input checks.

A task's ``evaluate(bench, data_root, encoder, settings)`` returns a :class:`TaskResult`;
metrics are percentages except INQUIRE's MRR (a fraction, as INQUIRE prints it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from biocap_core.errors import BioCAPError
from biocap_core.taxonomy import TEMPLATES, read_templates
from biocap_eval.benchmark import Benchmark, Status
from biocap_eval.embedding import Encoder, ImageEmbeddings

#: How many missing files an error or a result lists by name.
SHOW_MISSING = 5


class EvalError(BioCAPError, ValueError):
    """A benchmark's input is unusable (missing images, empty after filtering, no candidates
    ...)."""


@dataclass(frozen=True)
class Settings:
    """Options that change what a task computes (recorded in every result, compared on re-runs).

    ``label_type`` overrides the registry's label text type of zero-shot benchmarks;
    ``inquire_k`` None ranks all candidates, as the original script does;
    ``prefix_bug`` joins the retrieval prefix and caption with no space, as the original did;
    ``strict`` fails a benchmark on its first undecodable image instead of skipping it. It is not
    recorded: it decides whether a run fails, never its numbers (the skipped images are counted).
    """

    label_type: str | None = None
    templates: tuple[str, ...] = TEMPLATES
    templates_source: str = "builtin: 81 OpenAI ImageNet templates"
    per_class: bool = False
    inquire_k: int | None = None
    retrieval_prefix: str = "a photo of"
    prefix_bug: bool = False
    skip_missing: bool = False
    strict: bool = False

    def with_templates(self, path: Path) -> Settings:
        """These settings with the zero-shot templates of a file (core's reader), failing as an
        :class:`EvalError` like every other bad eval input."""
        try:
            templates = read_templates(path)
        except BioCAPError as exc:
            raise EvalError(str(exc)) from exc
        return replace(self, templates=templates, templates_source=str(Path(path).resolve()))


@dataclass
class TaskResult:
    metrics: dict[str, float]
    counts: dict[str, int]
    details: dict = field(default_factory=dict)


class ReportTable(NamedTuple):
    """A table of ``biocap-eval report``: its name (a benchmark's ``table``) and its title."""

    name: str
    title: str


ZEROSHOT_TABLE = ReportTable("zeroshot", "Zero-shot classification, top-1 accuracy (%)")
RETRIEVAL_TABLE = ReportTable(
    "retrieval", "Retrieval: INQUIRE-Rerank AP (%) and image-text recall (%)"
)


def no_problem(bench: Benchmark) -> str | None:
    return None


@dataclass(frozen=True)
class Task:
    """One kind of evaluation, as its module registers it in :data:`biocap_eval.tasks.TASKS`.

    ``status`` says whether a benchmark can run from a data root, ``evaluate`` computes its
    metrics, ``recorded`` gives the settings its numbers depend on (JSON-able; stored in every
    result and compared on re-runs), ``check`` what a registry entry of this task lacks (None
    when it is complete), and ``table`` the report table it brings (its name and title; each
    registry entry names the table its columns go to).
    """

    name: str
    status: Callable[[Benchmark, Path], Status]
    evaluate: Callable[[Benchmark, Path, Encoder, Settings], TaskResult]
    recorded: Callable[[Settings, Benchmark], dict[str, Any]]
    table: ReportTable
    check: Callable[[Benchmark], str | None] = no_problem


def missing_error(source: Path | str, missing: list[str], total: int, root: Path) -> EvalError:
    return EvalError(
        f"{source}: {len(missing)} of {total} image(s) missing under {root}; first:"
        f" {missing[:SHOW_MISSING]} (use --skip-missing to evaluate the rest)"
    )


def count_present(paths: list[Path]) -> int:
    return sum(p.is_file() for p in paths)


def readable(
    source: Path | str, embedded: ImageEmbeddings, names: Sequence[str], strict: bool
) -> tuple[list[int], dict[str, str]]:
    """Positions of the images that decoded, and the undecodable ones by name with why.

    With ``strict`` an undecodable image is an error naming it (and so fails only
    this benchmark); otherwise the task drops it and records it in the result.
    """
    unreadable = {str(names[i]): why for i, why in sorted(embedded.unreadable.items())}
    if unreadable and strict:
        name, why = next(iter(unreadable.items()))
        raise EvalError(
            f"{source}: {len(unreadable)} image(s) cannot be decoded; first: {name} ({why}); "
            "without --strict they are skipped and counted"
        )
    return embedded.readable(), unreadable
