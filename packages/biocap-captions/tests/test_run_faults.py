"""``biocap-captions run`` against faults: a flaky or dead server, and output paths that cannot be
written."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from biocap_captions.cli import app
from biocap_core import schemas
from biocap_core.shards import iter_samples


def shard_pattern(toy: Path) -> str:
    return str(toy / "train" / "shard-{000000..000003}.tar")


def run_args(toy: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "run",
        "--shards",
        shard_pattern(toy),
        "--out",
        str(out),
        "--engine",
        "openai",
        "--model",
        "tiny-vlm",
        "--base-url",
        url,
        "--batch-size",
        "8",
        "--concurrency",
        "4",
        "--no-progress",
        *extra,
    ]


def tables(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    captions = pl.concat(
        [schemas.CAPTIONS.read(p) for p in sorted((out / "captions").glob("*.parquet"))]
    )
    errors = pl.concat(
        [schemas.CAPTION_ERRORS.read(p) for p in sorted((out / "errors").glob("*.parquet"))]
    )
    return captions, errors


def uuids(toy: Path) -> list[str]:
    return sorted(s["__key__"] for s in iter_samples(shard_pattern(toy)))


def test_a_flaky_server_still_gives_every_image_a_caption(toy_dir, tmp_path, chat_server):
    """Every seventh request gets a 429, a 500 or a 200 with its JSON cut off; all are retried.

    Run as a subprocess with the progress bar on, so the CLI's own logging setup is what is tested:
    httpx's one INFO line per request must not reach the terminal.
    """
    out = tmp_path / "out"
    with chat_server(flaky=True) as server:
        command = [
            sys.executable,
            "-m",
            "biocap_captions",
            *run_args(toy_dir, out, server.url),
            "--progress",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    captions, errors = tables(out)
    assert sorted(captions["uuid"]) == uuids(toy_dir) and errors.height == 0
    assert server.requests > 40  # the faults really happened and were retried
    assert "HTTP Request" not in result.stderr and "no caption" not in result.stderr


def test_error_rows_are_retried_on_request_and_strict_fails_while_they_remain(
    toy_dir, tmp_path, chat_server
):
    out = tmp_path / "out"
    with chat_server(flaky=True) as server:
        first = CliRunner().invoke(app, run_args(toy_dir, out, server.url, "--max-retries", "0"))
        assert first.exit_code == 0, first.output  # errors alone do not fail a run ...
        _, errors = tables(out)
        assert errors.height == 5  # requests 7, 14, ..., 35 of 40, not retried
        assert (
            f"5 samples of this job's units have no caption (reasons in {out / 'errors'}); "
            "rerun with --retry-errors" in first.output
        )
        sent = server.requests
        rerun = CliRunner().invoke(app, run_args(toy_dir, out, server.url))
        strict = CliRunner().invoke(app, run_args(toy_dir, out, server.url, "--strict"))
        assert rerun.exit_code == 0 and strict.exit_code == 1  # ... unless --strict asks
        assert server.requests == sent  # a plain rerun does not retry them

        server.flaky = False
        retried = CliRunner().invoke(
            app, run_args(toy_dir, out, server.url, "--retry-errors", "--strict")
        )
    assert retried.exit_code == 0, retried.output
    assert server.requests == sent + 5  # exactly the error rows were sent again
    captions, errors = tables(out)
    assert (
        sorted(captions["uuid"]) == uuids(toy_dir) and errors.height == 0
    )  # each uuid once, holes filled
    assert not (out / "partial").exists() or not any((out / "partial").iterdir())


def test_a_dead_server_stops_the_run_at_once_naming_the_url(toy_dir, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        run_args(
            toy_dir, tmp_path / "out", url, "--max-retries", "1", "--max-consecutive-failures", "8"
        ),
    )
    assert result.exit_code == 1 and time.monotonic() - start < 10
    assert f"error: cannot reach the chat-completions server at {url}/models" in result.output
    assert not (tmp_path / "out" / "errors").exists()


def test_an_output_write_failing_mid_run_stops_it_in_one_line(toy_dir, tmp_path, chat_server):
    """The first unit's final tables cannot be written: stop there, do not caption the other 30
    images."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "errors").write_text("a file where the errors folder should be")
    with chat_server() as server:
        result = CliRunner().invoke(app, run_args(toy_dir, out, server.url))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert (
        f"error: cannot write {out / 'errors' / 'shard-000000.parquet'}: File exists"
        f" ({out / 'errors'})" in result.output
    )
    assert len(server.bodies) == 10


@pytest.mark.parametrize("where", ["under-a-file", "unwritable"])
@pytest.mark.parametrize("option", ["--out", "--write-shards"])
def test_an_output_path_that_cannot_be_written_fails_in_one_line(
    toy_dir, tmp_path, chat_server, where, option
):
    (tmp_path / "file").write_text("not a folder")
    bad = (
        tmp_path / "file" / "out"
        if where == "under-a-file"
        else Path("/proc/biocap-captions-test/out")
    )
    paths = {"--out": tmp_path / "out", "--write-shards": tmp_path / "shards"} | {option: bad}
    with chat_server() as server:
        result = CliRunner().invoke(
            app,
            run_args(
                toy_dir, paths["--out"], server.url, "--write-shards", str(paths["--write-shards"])
            ),
        )
        assert server.bodies == []
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    reason = "Not a directory" if where == "under-a-file" else "No such file or directory"
    assert result.output.startswith(f"error: cannot write {bad}: {reason}")
    assert len(result.output.splitlines()) == 1
