"""Kill the CLI with SIGKILL at several points, rerun, and get every uuid exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from biocap_core import schemas
from biocap_core.shards import iter_samples


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll until the condition holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("the captioning process neither progressed nor ended")


def files(folder: Path, pattern: str = "*.parquet") -> list[Path]:
    return list(folder.rglob(pattern)) if folder.is_dir() else []


def test_sigkill_at_any_point_then_rerun_gives_every_uuid_exactly_once(
    toy_dir, tmp_path, chat_server
):
    pattern = str(toy_dir / "train" / "shard-{000000..000003}.tar")
    out = tmp_path / "out"
    with chat_server(delay=0.02) as server:
        command = [
            sys.executable,
            "-m",
            "biocap_captions",
            "run",
            "--shards",
            pattern,
            "--out",
            str(out),
            "--engine",
            "openai",
            "--model",
            "tiny-vlm",
            "--base-url",
            server.url,
            "--concurrency",
            "2",
            "--batch-size",
            "4",
            "--checkpoint-seconds",
            "0",
            "--no-progress",
            "--write-shards",
            str(tmp_path / "shards"),
        ]
        kill_points = [
            lambda: len(files(out / "partial")) >= 1,  # mid-shard, right after a checkpoint
            lambda: len(files(out / "captions")) >= 1,  # right after a shard was finished
            lambda: len(files(out / "partial")) >= 2,  # mid-shard again, from a resumed run
        ]
        killed = 0
        for point in kill_points:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if wait_for(point, proc):
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
            proc.wait()
        final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert killed >= 2  # the run was really interrupted, not finished before the kill
    uuids = sorted(s["__key__"] for s in iter_samples(pattern))
    captions = pl.concat([schemas.CAPTIONS.read(p) for p in files(out / "captions")])
    errors = pl.concat([schemas.CAPTION_ERRORS.read(p) for p in files(out / "errors")])
    assert errors.height == 0
    assert sorted(captions["uuid"]) == uuids  # each once: no loss, no duplicate
    assert files(out / "partial") == []
    for shard in sorted((tmp_path / "shards").glob("*.tar")):
        samples = list(iter_samples(str(shard)))
        assert len(samples) == 10 and all("caption.txt" in s for s in samples)
    assert len(server.bodies) >= len(uuids)
