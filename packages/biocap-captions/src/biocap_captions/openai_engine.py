"""Engine for any OpenAI-compatible chat-completions server (``vllm serve``, SGLang, llama.cpp).

Images go as base64 data URLs in the user turn; the server applies the model's
chat template. The server is asked for its models when the engine is built, so
a wrong URL or a server that is not up fails at once, naming the URL, instead
of every sample retrying a refused connection.

Requests run as coroutines on one event loop (in its own thread) with at most
``concurrency`` of them on the wire. 429, 5xx, timeouts, dropped connections
and 200 answers whose body is not JSON (cut off by a proxy) are retried with
exponential backoff and jitter, honouring ``Retry-After``; a request waiting to
retry gives its slot to the next one, so one throttled request does not stall
the batch. Other 4xx answers and bodies without a completion fail only their
own sample. A server that stops accepting connections is logged once, and
when a request has used up its retries on refused connections the engine
raises :class:`~biocap_captions.engine.EngineBroken` (the server is gone; the
samples are not at fault and stay out of the errors table).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import httpx

from biocap_captions import __version__
from biocap_captions.engine import (
    STOP_STRINGS,
    CaptionRequest,
    Completion,
    EngineBroken,
    Failure,
    Result,
    SamplingConfig,
    describe,
    result_of,
)
from biocap_captions.prompt import chat_messages
from biocap_core.retry_after import retry_after_seconds

log = logging.getLogger(__name__)

USER_AGENT = f"biocap-captions/{__version__}"
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
)


def image_mime(data: bytes) -> str | None:
    """The MIME type of JPEG, PNG, GIF or WebP bytes, from their magic number."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None, unreachable: bool = False):
        super().__init__(reason)
        self.reason, self.wait, self.unreachable = reason, wait, unreachable


@dataclass(frozen=True)
class OpenAIOptions:
    """The openai engine's own options."""

    #: The server's URL up to ``/v1``.
    base_url: str = "http://127.0.0.1:8000/v1"
    #: Bearer token; None sends none.
    api_key: str | None = None
    #: Requests on the wire at once.
    concurrency: int = 16
    #: Seconds per request before it is retried.
    timeout: float = 120.0
    #: Retries of a transient fault (429, 5xx, timeout, dropped connection).
    max_retries: int = 5
    #: First wait between retries in seconds, doubled each time (with jitter) up to ``max_backoff``.
    backoff: float = 1.0
    max_backoff: float = 60.0


class OpenAIEngine:
    """Captions through ``POST {base_url}/chat/completions``."""

    def __init__(
        self,
        model: str,
        sampling: SamplingConfig = SamplingConfig(),
        options: OpenAIOptions = OpenAIOptions(),
    ):
        concurrency = options.concurrency
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.base_url = options.base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.sampling = sampling
        self.timeout = options.timeout
        self.max_retries = options.max_retries
        self.backoff = options.backoff
        self.max_backoff = options.max_backoff
        headers = {"User-Agent": USER_AGENT}
        if options.api_key:
            headers["Authorization"] = f"Bearer {options.api_key}"
        self.check_server(headers)
        self._unreachable = False  # set while connections are refused, so the outage is logged once
        self._window = asyncio.Semaphore(concurrency)
        self.client = httpx.AsyncClient(
            timeout=options.timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="biocap-openai", daemon=True
        )
        self._thread.start()

    def check_server(self, headers: dict[str, str]) -> None:
        """Ask ``GET {base_url}/models``; raise EngineBroken when the server cannot be used at all.

        Only an unreachable server and a refused key are fatal: a proxy without
        ``/models`` may still serve completions, so other answers only warn.
        """
        url = self.base_url + "/models"
        try:
            response = httpx.get(url, headers=headers, timeout=min(self.timeout, 10.0))
        except httpx.HTTPError as exc:
            raise EngineBroken(
                f"cannot reach the chat-completions server at {url}: {describe(exc)}; "
                "start it or fix --base-url"
            ) from exc
        if response.status_code in (401, 403):
            raise EngineBroken(
                f"{url} refused the API key (HTTP {response.status_code}); set --api-key "
                "or OPENAI_API_KEY"
            )
        try:
            served = [m["id"] for m in response.raise_for_status().json()["data"]]
        except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s does not list its models (%s); going on", url, describe(exc))
            return
        if self.model not in served:
            log.warning(
                "model %r is not among those %s serves (%s); requests may fail",
                self.model,
                self.base_url,
                ", ".join(map(str, served[:10])) or "none",
            )

    def payload(self, request: CaptionRequest, mime: str) -> dict:
        url = f"data:{mime};base64,{base64.b64encode(request.image).decode('ascii')}"
        body = {
            "model": self.model,
            "messages": chat_messages(request.instruction, image_url=url),
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_tokens,
            "stop": list(STOP_STRINGS),
        }
        if self.sampling.seed is not None:
            body["seed"] = self.sampling.seed
        return body

    def submit(self, requests: Sequence[CaptionRequest]) -> Future[list[Result]]:
        """Start a batch and return at once; its requests share the window with those of earlier
        batches."""
        return asyncio.run_coroutine_threadsafe(self._batch(requests), self._loop)

    def generate(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        future = self.submit(requests)
        try:
            return result_of(future)
        except BaseException:
            future.cancel()  # interrupted (or the server is gone): stop the batch's other requests
            raise

    async def _batch(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        tasks = [asyncio.ensure_future(self._caption(r)) for r in requests]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _caption(self, request: CaptionRequest) -> Result:
        mime = image_mime(request.image)
        if mime is None:
            return Failure(
                f"not a JPEG, PNG, GIF or WebP image (starts with {request.image[:8]!r})"
            )
        body = self.payload(request, mime)
        for attempt in range(self.max_retries + 1):
            try:
                async with self._window:
                    return await self._post(body)
            except _Retry as retry:
                if attempt == self.max_retries:
                    if retry.unreachable:
                        raise EngineBroken(
                            f"lost the server at {self.url}: {retry.reason} "
                            f"({attempt + 1} attempts); captions so far are kept, rerun to resume"
                        ) from None
                    return Failure(f"gave up after {attempt + 1} attempts: {retry.reason}")
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                await asyncio.sleep(
                    retry.wait if retry.wait is not None else delay
                )  # outside the window
        raise AssertionError("unreachable")

    async def _post(self, body: dict) -> Result:
        try:
            response = await self.client.post(self.url, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if not self._unreachable:
                self._unreachable = True
                log.warning("cannot connect to %s (%s); retrying", self.url, describe(exc))
            raise _Retry(f"connection error: {describe(exc)}", unreachable=True) from exc
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout after {self.timeout:g} s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retry(f"connection error: {describe(exc)}") from exc
        if self._unreachable:
            self._unreachable = False
            log.warning("connected to %s again", self.url)
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("retry-after"))
            raise _Retry(
                f"HTTP {status}: {response.text[:200]}",
                None if wait is None else min(wait, self.max_backoff),
            )
        if status >= 400:
            return Failure(f"HTTP {status}: {response.text[:300]} ({self.url})")
        try:
            payload = response.json()
        except ValueError as exc:  # a body cut off on the way is as transient as a 5xx
            raise _Retry(f"malformed response (not JSON): {response.text[:200]!r}") from exc
        return parse_completion(payload)

    def close(self) -> None:
        async def shut_down() -> None:
            # requests of a batch given up on (an interrupted run) must not outlive the client
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await self.client.aclose()

        asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def parse_completion(body: object) -> Result:
    """The first choice of a parsed chat-completions body, or a Failure saying what is malformed."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"content is {type(text).__name__}")
    except (KeyError, IndexError, TypeError) as exc:
        return Failure(
            f"malformed response (no choices[0].message.content: {describe(exc)}):"
            f" {str(body)[:200]}"
        )
    usage = body.get("usage") or {}
    n_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Completion(
        text, choice.get("finish_reason"), n_tokens if isinstance(n_tokens, int) else None
    )
