"""The OpenAI-compatible engine against a scripted chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import threading
import time

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from biocap_captions import __version__
from biocap_captions.cli import app
from biocap_captions.engine import (
    STOP_STRINGS,
    CaptionRequest,
    Completion,
    EngineBroken,
    Failure,
    SamplingConfig,
)
from biocap_captions.openai_engine import OpenAIEngine, OpenAIOptions, image_mime
from biocap_core import schemas

JPEG = b"\xff\xd8\xff\xe0" + b"fake jpeg body" * 4
PROMPT = "Describe. For this image of a Toy crawler, write one sentence."


def engine_for(server, **kw) -> OpenAIEngine:
    options = (
        dict(
            base_url=server.url,
            concurrency=4,
            timeout=0.5,
            max_retries=3,
            backoff=0.01,
            max_backoff=0.05,
        )
        | kw
    )
    return OpenAIEngine("tiny-vlm", SamplingConfig(0.6, 0.8, 50, seed=7), OpenAIOptions(**options))


def test_request_carries_the_image_prompt_and_sampling(chat_server):
    with chat_server() as server:
        engine = engine_for(server)
        [result] = engine.generate([CaptionRequest("u1", JPEG, PROMPT)])
        engine.close()
    assert result == Completion("The Toy crawler shows a rounded body with dark marks.", "stop", 9)
    [body] = server.bodies
    assert (
        body["model"],
        body["temperature"],
        body["top_p"],
        body["max_tokens"],
        body["seed"],
    ) == ("tiny-vlm", 0.6, 0.8, 50, 7)
    assert body["stop"] == list(STOP_STRINGS)
    [message] = body["messages"]
    image, text = message["content"]
    assert message["role"] == "user" and text == {"type": "text", "text": PROMPT}
    prefix = "data:image/jpeg;base64,"
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == JPEG
    assert server.user_agents == {f"biocap-captions/{__version__}"}  # not the bare python-httpx/x.y


def test_retries_on_429_5xx_and_timeouts_then_succeeds(chat_server):
    with chat_server(slow=1.5) as server:
        engine = engine_for(server)
        results = engine.generate(
            [
                CaptionRequest("a", JPEG, PROMPT + " [429x2]"),
                CaptionRequest("b", JPEG, PROMPT + " [500x3]"),
                CaptionRequest("c", JPEG, PROMPT + " [slowx1]"),
            ]
        )
        engine.close()
    assert all(isinstance(r, Completion) for r in results), results
    assert [server.attempts[PROMPT + t] for t in (" [429x2]", " [500x3]", " [slowx1]")] == [3, 4, 2]


def test_failures_are_per_sample_and_say_why(chat_server):
    with chat_server() as server:
        engine = engine_for(server, max_retries=2)
        results = engine.generate(
            [
                CaptionRequest("ok", JPEG, PROMPT),
                CaptionRequest("limited", JPEG, PROMPT + " [always429]"),
                CaptionRequest("bad", JPEG, PROMPT + " [400]"),
                CaptionRequest("malformed", JPEG, PROMPT + " [malformed]"),
                CaptionRequest("html", JPEG, PROMPT + " [notjson]"),
                CaptionRequest("not-image", b"GIF", PROMPT),
            ]
        )
        engine.close()
    ok, limited, bad, malformed, html, not_image = results
    assert isinstance(ok, Completion)
    assert isinstance(limited, Failure) and limited.reason.startswith(
        "gave up after 3 attempts: HTTP 429"
    )
    assert (
        isinstance(bad, Failure)
        and bad.reason.startswith("HTTP 400:")
        and server.attempts[PROMPT + " [400]"] == 1
    )
    assert malformed.reason.startswith("malformed response (no choices[0].message.content")
    # a body that does not parse is retried like a 5xx (a proxy cut it off), a JSON body without a
    # completion is not
    assert html.reason.startswith("gave up after 3 attempts: malformed response (not JSON)")
    assert (
        server.attempts[PROMPT + " [notjson]"] == 3
        and server.attempts[PROMPT + " [malformed]"] == 1
    )
    assert not_image.reason.startswith("not a JPEG, PNG, GIF or WebP image")


def test_concurrency_is_bounded(chat_server):
    with chat_server(delay=0.05) as server:
        engine = engine_for(server, concurrency=3)
        start = time.monotonic()
        results = engine.generate(
            [CaptionRequest(str(i), JPEG, f"{PROMPT} #{i}") for i in range(12)]
        )
        elapsed = time.monotonic() - start
        engine.close()
    assert all(isinstance(r, Completion) for r in results)
    assert server.max_in_flight == 3
    assert elapsed >= 4 * 0.05  # 12 requests, 3 at a time


def test_a_request_waiting_to_retry_leaves_its_slot_to_the_others(chat_server):
    """Two throttled requests (Retry-After 1 s) at concurrency 2 must not stall the other six for
    that second."""
    throttled = [f"{PROMPT} [429x1] #{i}" for i in range(2)]
    plain = [f"{PROMPT} #{i}" for i in range(6)]
    with chat_server(delay=0.02, retry_after="1") as server:
        engine = engine_for(server, concurrency=2, max_backoff=5.0)
        results = engine.generate([CaptionRequest(t, JPEG, t) for t in throttled + plain])
        engine.close()
    assert all(isinstance(r, Completion) for r in results)
    order = [body["messages"][0]["content"][1]["text"] for body in server.bodies]
    # The first tries of the throttled two may reach the server in either order, and the first
    # plain request may overtake the second throttled one (its slot frees as soon as the 429
    # comes back); what matters is that both retries come after every plain request.
    assert len(order) == 10
    assert sorted(order[-2:]) == throttled
    assert sorted(order[:-2]) == sorted(throttled + plain)


def test_a_throttled_request_does_not_hold_up_the_next_batch(toy_dir, tmp_path, chat_server):
    """The first request of a 10-sample shard (two batches of 5) waits 1 s to retry; the second
    batch must be sent meanwhile, so the window stays full instead of idling at the batch's end."""
    from biocap_captions.pipeline import Captioner, RunOptions
    from biocap_captions.prompt import FormatExamples, PromptBuilder
    from biocap_captions.sources import shard_units

    with chat_server(delay=0.02, retry_after="1", throttle=(1,)) as server:
        engine = engine_for(server, concurrency=2, max_backoff=5.0)
        report = Captioner(
            engine,
            PromptBuilder(FormatExamples.load()),
            RunOptions(out=tmp_path, batch_size=5, progress=False),
        ).run(shard_units(str(toy_dir / "train" / "shard-000000.tar")))
        engine.close()
    assert report.captions == 10
    order = [body["messages"][0]["content"][0]["image_url"]["url"] for body in server.bodies]
    assert len(order) == 11 and len(set(order)) == 10
    assert (
        order[-1] == order[0]
    )  # the retry came after every other request, those of the next batch included


def test_ctrl_c_ends_the_wait_for_a_batch_at_once(chat_server):
    """SIGINT may land on any thread (here the test server's); the wait must not last until the
    batch is done."""
    # Python's own Ctrl-C handler, whatever an earlier test in this (pytest-xdist worker) process
    # installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _wait_is_interrupted(chat_server)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_is_interrupted(chat_server) -> None:
    with chat_server(delay=2.0) as server:
        engine = engine_for(server, concurrency=2, timeout=10.0)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            engine.generate(
                [CaptionRequest(str(i), JPEG, f"{PROMPT} #{i}") for i in range(8)]
            )  # 8 s of work
        elapsed = time.monotonic() - start
        engine.close()
    assert elapsed < 2.5


def test_a_dead_server_is_refused_when_the_engine_is_built(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    start = time.monotonic()
    with pytest.raises(
        EngineBroken,
        match=f"cannot reach the chat-completions server at {url}/models: ConnectError",
    ):
        OpenAIEngine(model="tiny-vlm", options=OpenAIOptions(base_url=url))
    assert time.monotonic() - start < 5


def test_losing_the_server_mid_run_stops_the_engine_and_is_logged_once(chat_server, caplog):
    with chat_server() as server:
        engine = engine_for(server, max_retries=2)
    # the server is gone now: every connection is refused
    with (
        caplog.at_level(logging.WARNING, logger="biocap_captions"),
        pytest.raises(EngineBroken, match=f"lost the server at {server.url}"),
    ):
        engine.generate([CaptionRequest(str(i), JPEG, f"{PROMPT} #{i}") for i in range(8)])
    engine.close()
    [warning] = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert warning.startswith(f"cannot connect to {server.url}/chat/completions (ConnectError")


def test_an_unknown_model_is_warned_about_at_start(chat_server, caplog):
    with (
        chat_server(models=("other-vlm",)) as server,
        caplog.at_level(logging.WARNING, logger="biocap_captions"),
    ):
        engine_for(server).close()
    assert f"model 'tiny-vlm' is not among those {server.url} serves (other-vlm)" in caplog.text


def test_run_help_shows_every_option_name_whole():
    """Piped help (not a terminal) must not cut names at 80 columns ('--max-consecutive-fa…')."""
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=80)
    assert result.exit_code == 0
    run = typer.main.get_command(app).commands["run"]
    names = [opt for param in run.params for opt in param.opts + param.secondary_opts]
    assert "--max-consecutive-failures" in names and "--retry-errors" in names
    assert [n for n in names if n not in result.output] == []


def test_mime_from_magic_numbers():
    assert image_mime(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert image_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_mime(b"<html>") is None


def test_cli_run_with_the_openai_engine_then_stats(toy_dir, tmp_path, chat_server):
    out = tmp_path / "out"
    with chat_server() as server:
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--shards",
                str(toy_dir / "train" / "shard-{000000..000003}.tar"),
                "--out",
                str(out),
                "--catalog",
                str(toy_dir / "catalog.parquet"),
                "--wiki",
                str(toy_dir / "wiki" / "wiki_descriptions.parquet"),
                "--engine",
                "openai",
                "--model",
                "tiny-vlm",
                "--base-url",
                server.url,
                "--batch-size",
                "8",
                "--num-shards",
                "2",
                "--shard-index",
                "1",
                "--no-progress",
                "--api-key",
                "sk-not-for-the-record",
                "--seed",
                "7",
            ],
        )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "captions").iterdir()) == [
        "shard-000001.parquet",
        "shard-000003.parquet",
    ]
    captions = pl.concat([schemas.CAPTIONS.read(p) for p in (out / "captions").iterdir()])
    assert captions.height == 20 and captions["names_species"].all() and captions["wiki_used"].all()
    assert len(server.bodies) == 20
    (manifest,) = (out / "runs").glob("*-job1of2-*.json")
    settings = json.loads(manifest.read_text())
    assert "sk-not-for-the-record" not in manifest.read_text()
    assert (settings["engine"], settings["model"], settings["job"]) == (
        "openai",
        "tiny-vlm",
        [1, 2],
    )
    assert (
        settings["units"] == ["shard-000001", "shard-000003"] and settings["sampling"]["seed"] == 7
    )
    # the openai engine's own options were recorded (and given to it), not vLLM's
    assert sorted(settings["options"]) == [
        "backoff",
        "base_url",
        "concurrency",
        "max_backoff",
        "max_retries",
        "timeout",
    ]
    assert settings["options"]["base_url"] == server.url
    assert server.bodies[0]["seed"] == 7
    stats = CliRunner().invoke(app, ["stats", str(out)])
    assert stats.exit_code == 0 and "captions: 20   errors: 0" in stats.output
    assert "share naming the species: 100.0%" in stats.output


def test_cli_refuses_an_unknown_engine_before_any_work(tmp_path):
    result = CliRunner().invoke(
        app, ["run", "--shards", "x.tar", "--out", str(tmp_path / "out"), "--engine", "tgi"]
    )
    assert result.exit_code == 2 and "unknown engine 'tgi'; use vllm or openai" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--shards",
            str(tmp_path / "nope-{0..1}.tar"),
            "--out",
            str(tmp_path),
            "--engine",
            "openai",
        ],
    )
    assert result.exit_code == 1 and "error: no such shard file(s)" in result.output
