"""Runs over many photos: a killed run resumes where it stopped, several jobs share the inputs and
``merge`` joins them, a changed rerun is refused, and a failed run still writes its ``--log``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from biocap_predict.cli import app

pytestmark = pytest.mark.slow
LABELS = "red crawler,blue sprout,green cap"
#: The CLI with every prediction block's write slowed down, so the test can kill it mid-part.
SLOW_CLI = """
import sys, time
from biocap_predict import outputs
write = outputs.RowWriter.write
outputs.RowWriter.write = lambda self, rows: (time.sleep(0.3), write(self, rows))[1]
from biocap_predict.cli import app
sys.argv[0] = "biocap-predict"
app()
"""


def run(*args, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, f"{args}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """300 tiny JPEGs in three folders."""
    root = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(300):
        folder = root / f"camera{i % 3}"
        folder.mkdir(exist_ok=True)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return sorted(paths)


@pytest.fixture(scope="module")
def predict_args(trained_checkpoint, photos) -> list:
    root = os.path.dirname(os.path.dirname(photos[0]))
    return [
        "predict", root, "--recursive", "--labels", LABELS, "--k", "1",
        "--model", "BioCAP-toy", "--pretrained", trained_checkpoint, "--device", "cpu",
        "--batch-size", "10", "--workers", "0", "--part-size", "30", "--quiet",
    ]  # fmt: skip


def names_in(frame: pl.DataFrame) -> dict[str, int]:
    return dict(frame.group_by("file_name").len().iter_rows())


def test_a_killed_run_rerun_with_its_command_gives_every_photo_once(
    predict_args, photos, tmp_path, child_env
):
    out = tmp_path / "predictions.csv"
    state = tmp_path / "predictions.csv.parts" / "job-00000-of-00001.json"
    args = [str(a) for a in predict_args] + ["--output", str(out)]
    child = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], env=child_env)
    deadline = time.monotonic() + 240
    while not (state.exists() and json.loads(state.read_text())["parts"]):
        assert child.poll() is None, "the run ended before a part was recorded"
        assert time.monotonic() < deadline, "no part recorded in time"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not out.exists()
    done = sum(p["inputs"] for p in json.loads(state.read_text())["parts"])
    assert 0 < done < len(photos)

    resumed = run(*args)
    assert f"resuming: {done} of this job's {len(photos)} inputs are done" in resumed.output
    assert names_in(pl.read_csv(out)) == {p: 1 for p in photos}
    assert not state.parent.exists()


def test_two_jobs_then_merge_give_every_photo_once_and_a_changed_rerun_is_refused(
    predict_args, photos, tmp_path
):
    out = tmp_path / "predictions.parquet"
    args = [*predict_args, "--format", "parquet", "--output", out, "--num-shards", "2"]
    first = run(*args, "--shard-index", "0")
    assert "once every job has, join their parts: biocap-predict merge" in first.output
    unfinished = run("merge", out, ok=False)
    assert unfinished.exit_code == 1 and "job-00001-of-00002.json" in unfinished.output

    changed = run(*args, "--shard-index", "0", "--k", "2", ok=False)
    assert changed.exit_code == 1 and "(request.k differ)" in changed.output
    assert "rerun it with its own command, or delete" in changed.output

    run(*args, "--shard-index", "1")
    merged = run("merge", out)
    assert f"{len(photos)} image(s) of {len(photos)} input(s)" in merged.output
    assert names_in(pl.read_parquet(out)) == {p: 1 for p in photos}
    assert not (tmp_path / "predictions.parquet.parts").exists()


def test_merge_refuses_parts_that_name_a_photo_twice(predict_args, photos, tmp_path):
    out = tmp_path / "twice.jsonl"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([photos[0], *photos[:5]]) + "\n")  # the first photo twice
    args = ["predict", *predict_args[3:]]  # not the folder: the list
    result = run(*args, "--from-list", listing, "--format", "jsonl", "--output", out, ok=False)
    assert result.exit_code == 1 and "in more than one part (or listed twice)" in result.output
    assert not out.exists()


def test_a_failed_run_writes_its_log(predict_args, photos, tmp_path):
    empty = tmp_path / "labels.txt"
    empty.write_text("\n")
    log = tmp_path / "run.json"
    args = [a if a != LABELS else empty for a in predict_args]
    result = run(*args, "--output", tmp_path / "p.csv", "--log", log, ok=False)
    assert result.exit_code == 1
    record = json.loads(log.read_text())
    assert record["status"] == "failed"
    assert "the label file is empty" in record["error"] and record["finished_at"]
