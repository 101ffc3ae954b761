"""``benchmarks/captions_ablation.py --quick``: two arms x one seed of the demo for a few steps on a
small toy, evaluated, reported, and skipped when run again. Checks the files and their columns, not
what the numbers show."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from biocap_core.toy import ToyConfig, generate
from biocap_train.demo import toy_root

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "captions_ablation.py"
METRICS = [
    "species_top1",
    "genus_top1",
    "inquire_ap_Appearance",
    "inquire_ap_Behavior",
    "inquire_ap_Context",
    "inquire_ap_Species",
    "retrieval_i2t_R@1",
    "retrieval_t2i_R@1",
]


@pytest.mark.slow
def test_the_quick_ablation_writes_its_table_csv_and_plot_and_resumes(tmp_path, child_env):
    cache = tmp_path / "cache"  # a small toy where the demo looks for its own
    small = ToyConfig(
        species=8,
        images_per_species=8,
        val_per_species=1,
        eval_per_species=2,
        inquire_queries=4,
        inquire_candidates=8,
        image_size=32,
        shard_size=32,
    )
    generate(toy_root(cache), small)
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--cache", str(cache)]
    first = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "= 2 runs, 0 finished earlier" in first.stdout

    with open(out / "runs.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [
        "arm",
        "arm_label",
        "seed",
        "head",
        "steps",
        "train_seconds",
        "train_cpu_seconds",
        "eval_seconds",
        "eval_cpu_seconds",
        *METRICS,
    ]
    # BioCAP with both heads; the shared projector with the taxonomic head only
    assert sorted((r["arm"], r["head"]) for r in rows) == [
        ("biocap", "caption"),
        ("biocap", "tax"),
        ("shared", "tax"),
    ]
    for row in rows:
        assert row["seed"] == "0" and row["steps"] == "4"
        assert all(0 <= float(row[m]) <= 100 for m in METRICS), row
    records = json.loads((out / "runs.json").read_text())
    assert [list(r) for r in records] == [reader.fieldnames] * 3
    assert [r["species_top1"] for r in records] == [float(r["species_top1"]) for r in rows]

    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| arm (head) | seeds | " + " | ".join(METRICS) + " |"
    body = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert set(body) == {
        "BioCAP (tax head)",
        "BioCAP (caption head)",
        "one shared projector (tax head)",
    }
    assert all(line.count("±") == len(METRICS) for line in body.values())
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run finds both results and trains nothing
    results = sorted((out / "runs").glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    again = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "all 2 runs finished earlier" in again.stdout
    assert [p.stat().st_mtime_ns for p in results] == stamps
