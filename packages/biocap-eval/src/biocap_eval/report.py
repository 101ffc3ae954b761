"""Comparison tables and a bar chart from a folder of result JSONs, laid out as the paper's tables.

Two tables, as the paper: zero-shot (top-1 per benchmark) and retrieval
(INQUIRE AP per supercategory, then I2T/T2I recall). Models are rows, each
benchmark's registry ``columns`` are columns, and the mean of a row comes last
(left empty when the row lacks a column, so means always cover the same columns).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from biocap_core import schemas
from biocap_core.errors import BioCAPError
from biocap_core.fileio import atomic_write
from biocap_eval.registry import load_registry
from biocap_eval.tasks import TABLES

MEAN = "Mean"


class ReportError(BioCAPError, ValueError):
    """No usable result files."""


@dataclass
class Table:
    name: str
    columns: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def mean(self, model: str) -> float | None:
        cells = self.rows[model]
        if not self.columns or any(c not in cells for c in self.columns):
            return None
        return sum(cells[c] for c in self.columns) / len(self.columns)


def load_results(results_dir: Path) -> list[dict]:
    """Every result JSON under ``results_dir`` (files that are not results are ignored)."""
    out = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and {"format", "model", "benchmark", "metrics"} <= set(doc):
            out.append(doc)
    if not out:
        raise ReportError(f"{results_dir}: no biocap-eval result files (*.json) found")
    return out


def build_tables(results: list[dict]) -> dict[str, Table]:
    order = {name: i for i, name in enumerate(load_registry())}
    results = sorted(
        results,
        key=lambda d: (order.get(d["benchmark"]["name"], len(order)), d["benchmark"]["name"]),
    )
    tables: dict[str, Table] = {}
    for doc in results:
        bench = doc["benchmark"]
        table = tables.setdefault(bench["table"], Table(bench["table"]))
        model = doc["model"]["label"]
        row = table.rows.setdefault(model, {})
        for column, metric in bench["columns"].items():
            if metric in doc["metrics"]:
                if column not in table.columns:
                    table.columns.append(column)
                row[column] = doc["metrics"][metric]
    for table in tables.values():
        table.rows = dict(sorted(table.rows.items()))
    return {name: tables[name] for name in sorted(tables, key=lambda n: list(TABLES).index(n))}


def _cells(table: Table, model: str) -> list[float | None]:
    return [table.rows[model].get(c) for c in table.columns] + [table.mean(model)]


def markdown(tables: dict[str, Table]) -> str:
    parts = []
    for table in tables.values():
        header = ["Model", *table.columns, MEAN]
        best = {}
        for j in range(len(header) - 1):
            values = [v for m in table.rows if (v := _cells(table, m)[j]) is not None]
            best[j] = max(values) if values else None
        lines = [
            f"## {TABLES[table.name]}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
        ]
        for model in table.rows:
            cells = []
            for j, v in enumerate(_cells(table, model)):
                text = "–" if v is None else f"{v:.1f}"
                cells.append(
                    f"**{text}**"
                    if v is not None and len(table.rows) > 1 and v == best[j]
                    else text
                )
            lines.append("| " + " | ".join([model, *cells]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def table_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", *table.columns, MEAN])
    for model in table.rows:
        writer.writerow([model, *("" if v is None else f"{v:.4f}" for v in _cells(table, model))])
    return buf.getvalue()


def long_frame(results: list[dict]) -> pl.DataFrame:
    """Every metric of every result, one row each (the ``eval_results`` schema)."""
    rows = [
        {
            "model": d["model"]["label"],
            "benchmark": d["benchmark"]["name"],
            "task": d["benchmark"]["task"],
            "metric": metric,
            "value": value,
        }
        for d in results
        for metric, value in d["metrics"].items()
    ]
    return schemas.EVAL_RESULTS.validate(schemas.EVAL_RESULTS.frame(rows), source="results")


def bar_chart(tables: dict[str, Table], path: Path) -> None:
    """One panel per table: grouped bars, one colour per model, the mean last."""
    fig = Figure(
        figsize=(
            max(8.0, 1.0 + 0.9 * max(len(t.columns) + 1 for t in tables.values())),
            3.6 * len(tables),
        ),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, tables.values()):
        labels = [*table.columns, MEAN]
        models = list(table.rows)
        width = 0.8 / max(1, len(models))
        for i, model in enumerate(models):
            values = [math.nan if v is None else v for v in _cells(table, model)]
            ax.bar(
                [x + (i - (len(models) - 1) / 2) * width for x in range(len(labels))],
                values,
                width,
                label=model,
            )
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_title(TABLES[table.name])
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=120, format="png")


def write_report(results_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report_<table>.csv``, ``results_long.csv`` and ``report.png``; return
    their paths."""
    results = load_results(results_dir)
    tables = build_tables(results)
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "report.md",
        "long_csv": out / "results_long.csv",
        "chart": out / "report.png",
    }
    atomic_write(files["markdown"], lambda tmp: tmp.write_text(markdown(tables)))
    for name, table in tables.items():
        files[f"{name}_csv"] = out / f"report_{name}.csv"
        atomic_write(files[f"{name}_csv"], lambda tmp, t=table: tmp.write_text(table_csv(t)))
    atomic_write(files["long_csv"], long_frame(results).write_csv)
    atomic_write(files["chart"], lambda tmp: bar_chart(tables, tmp))
    return files
