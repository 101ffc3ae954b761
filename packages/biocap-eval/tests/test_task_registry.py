"""The task registry: a registered task runs, lists and reports; an unknown task is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biocap_eval.benchmark import Benchmark, Status
from biocap_eval.cli import app
from biocap_eval.registry import RegistryError, load_registry
from biocap_eval.runner import status
from biocap_eval.tasks import TABLES, TASKS, EvalError, Settings, recorded_settings
from biocap_eval.tasks.base import ReportTable, Task, TaskResult

COUNT_TABLE = ReportTable("counting", "Images counted per benchmark")


def _images(bench: Benchmark, data_root: Path) -> list[Path]:
    return sorted(bench.image_root(data_root).rglob("*.jpg"))


def _status(bench: Benchmark, data_root: Path) -> Status:
    n = len(_images(bench, data_root))
    return Status(
        "ready" if n else "missing", rows=n, images_found=n, images_expected=n, detail=f"{n} images"
    )


def _evaluate(bench, data_root, enc, settings) -> TaskResult:
    paths = _images(bench, data_root)
    embedded = enc.image_files(paths)
    return TaskResult(
        {"images": float(len(embedded.readable())), "dims": float(embedded.vectors.shape[1])},
        {"images": len(paths)},
    )


def _check(bench: Benchmark) -> str | None:
    return None if bench.images else "a count benchmark needs images"


#: A task as a new module would define it.
COUNT = Task(
    "count", _status, _evaluate, lambda settings, bench: {"what": "jpg files"}, COUNT_TABLE, _check
)

REGISTRY = """
[[benchmark]]
name = "toy-count"
title = "Toy images, counted"
task = "count"
table = "counting"
images = "zeroshot/images"
columns = { "Images" = "images" }
"""


@pytest.fixture
def count_task(monkeypatch):
    """The count task registered: its one entry in TASKS (and the table it brings)."""
    monkeypatch.setitem(TASKS, "count", COUNT)
    monkeypatch.setitem(TABLES, COUNT_TABLE.name, COUNT_TABLE.title)
    return COUNT


def test_a_registered_task_is_listed_run_and_reported(count_task, toy_dir, tiny_json, tmp_path):
    registry = tmp_path / "reg.toml"
    registry.write_text(REGISTRY)
    (bench,) = load_registry(registry).values()
    listed = CliRunner().invoke(
        app, ["list", "--data-root", str(toy_dir), "--registry", str(registry)]
    )
    assert listed.exit_code == 0, listed.output
    assert "toy-count        count      ready" in listed.output

    out = tmp_path / "results"
    ran = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_json),
            "--data-root",
            str(toy_dir),
            "--registry",
            str(registry),
            "-b",
            "count",
            "--out",
            str(out),
            "--workers",
            "0",
            "--quiet",
        ],
    )
    assert ran.exit_code == 0, ran.output
    (path,) = out.glob("*/toy-count.json")
    doc = json.loads(path.read_text())
    n = len(_images(bench, toy_dir))
    assert n > 0 and doc["metrics"] == {"images": n, "dims": 32.0}
    assert doc["settings"] == {"what": "jpg files", "skip_missing": False}

    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "report.md").read_text()
    assert "## Images counted per benchmark" in text and "| Images |" in text


def test_an_entry_the_task_finds_incomplete_is_refused_naming_it(count_task, tmp_path):
    registry = tmp_path / "reg.toml"
    registry.write_text(REGISTRY.replace('images = "zeroshot/images"\n', ""))
    with pytest.raises(
        RegistryError, match="benchmark 'toy-count': a count benchmark needs images"
    ):
        load_registry(registry)


def test_an_unknown_task_is_an_error_not_retrieval(tmp_path, toy_dir):
    registry = tmp_path / "reg.toml"
    registry.write_text(REGISTRY.replace('task = "count"', 'task = "segmentation"'))
    with pytest.raises(
        RegistryError,
        match=r"task 'segmentation' is not one of \['zeroshot', 'inquire', " r"'retrieval'\]",
    ):
        load_registry(registry)
    bench = Benchmark(name="seg", title="Seg", task="segmentation", table="retrieval", columns={})
    with pytest.raises(
        EvalError, match="seg: unknown task 'segmentation'; known: zeroshot, inquire, retrieval"
    ):
        status(bench, toy_dir)
    with pytest.raises(EvalError, match="unknown task 'segmentation'"):
        recorded_settings(Settings(), bench)


def test_the_report_tables_come_from_the_tasks():
    assert TABLES == {
        "zeroshot": "Zero-shot classification, top-1 accuracy (%)",
        "retrieval": "Retrieval: INQUIRE-Rerank AP (%) and image-text recall (%)",
    }
    assert {t.table.name for t in TASKS.values()} == set(TABLES)
