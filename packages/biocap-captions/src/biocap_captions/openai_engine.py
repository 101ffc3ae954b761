"""Engine for any OpenAI-compatible chat-completions server (``vllm serve``, SGLang, llama.cpp).

Images go as base64 data URLs in the user turn; the server applies the model's
chat template. Requests of a batch run on a bounded thread pool sharing one
connection pool; 429, 5xx, timeouts and connection errors are retried with
exponential backoff and jitter (honouring ``Retry-After``). Other 4xx answers
and malformed bodies fail only their own sample.
"""

from __future__ import annotations

import base64
import email.utils
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import httpx

from biocap_captions.engine import STOP_STRINGS, CaptionRequest, Completion, Failure, Result, SamplingConfig, describe
from biocap_captions.prompt import chat_messages

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"))


def image_mime(data: bytes) -> str | None:
    """The MIME type of JPEG, PNG, GIF or WebP bytes, from their magic number."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class OpenAIEngine:
    """Captions through ``POST {base_url}/chat/completions``."""

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        sampling: SamplingConfig = SamplingConfig(),
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.sampling = sampling
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="biocap-openai")

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

    def generate(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        return list(self.pool.map(self._caption, requests))

    def _caption(self, request: CaptionRequest) -> Result:
        mime = image_mime(request.image)
        if mime is None:
            return Failure(f"not a JPEG, PNG, GIF or WebP image (starts with {request.image[:8]!r})")
        body = self.payload(request, mime)
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except _Retry as retry:
                if attempt == self.max_retries:
                    return Failure(f"gave up after {attempt + 1} attempts: {retry.reason}")
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                time.sleep(retry.wait if retry.wait is not None else delay)
        raise AssertionError("unreachable")

    def _post(self, body: dict) -> Result:
        try:
            response = self.client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout after {self.timeout:g} s ({type(exc).__name__})")
        except httpx.TransportError as exc:
            raise _Retry(f"connection error: {describe(exc)}")
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("retry-after"))
            raise _Retry(f"HTTP {status}: {response.text[:200]}", None if wait is None else min(wait, self.max_backoff))
        if status >= 400:
            return Failure(f"HTTP {status}: {response.text[:300]} ({self.url})")
        return parse_completion(response)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


def parse_completion(response: httpx.Response) -> Result:
    """The first choice of a chat-completions body, or a Failure saying what is malformed."""
    try:
        body = response.json()
    except ValueError:
        return Failure(f"malformed response (not JSON): {response.text[:200]!r}")
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"content is {type(text).__name__}")
    except (KeyError, IndexError, TypeError) as exc:
        return Failure(f"malformed response (no choices[0].message.content: {describe(exc)}): {str(body)[:200]}")
    usage = body.get("usage") or {}
    n_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Completion(text, choice.get("finish_reason"), n_tokens if isinstance(n_tokens, int) else None)
