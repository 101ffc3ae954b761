"""The small interface every caption engine implements, and failure isolation around it.

The engines themselves, by name, are in :mod:`biocap_captions.engines`.

An engine turns a batch of (image bytes, instruction) requests into one result
per request, in order: a :class:`Completion`, or a :class:`Failure` when the
engine can pin the problem on that request (an undecodable image, an HTTP 400).
When it cannot (vLLM rejects a whole ``generate`` call for one over-long
prompt), it raises; :func:`generate_isolated` then splits the batch in halves
until the failing requests stand alone, so one bad sample never costs the rest.

An engine that can take a second batch while the first is still running (a
server with a concurrency window) also offers ``submit(requests)``, returning
a :class:`concurrent.futures.Future` of the same list. The pipeline then keeps
two batches in flight, so the window stays full while a batch's last requests
wait out a retry instead of idling until they are done.

An engine whose requests need CPU work before the accelerator can start (vLLM:
decode the image, render the chat template) offers ``prepare(requests)``,
returning the requests with that work done in :attr:`CaptionRequest.prepared`.
The pipeline calls it in a background thread for the next batch while the
current one generates, so the accelerator does not wait for the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from biocap_core.errors import BioCAPError

#: The original's captioner.
DEFAULT_MODEL = "OpenGVLab/InternVL3-38B-AWQ"
#: Stop strings of the original (InternVL's and Qwen's end-of-turn markers).
STOP_STRINGS: tuple[str, ...] = ("<|im_end|>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters; the defaults are the original's."""

    temperature: float = 0.6
    top_p: float = 0.8
    max_tokens: int = 50
    seed: int | None = None


@dataclass(frozen=True)
class CaptionRequest:
    uuid: str
    image: bytes
    instruction: str
    #: What the engine's ``prepare`` made of this request (engine-specific; None until prepared).
    prepared: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    n_tokens: int | None


@dataclass(frozen=True)
class Failure:
    reason: str


Result = Completion | Failure


class Engine(Protocol):
    """What the pipeline needs from an engine (``submit`` and ``prepare`` are optional; see the
    module docs)."""

    #: Recorded in the ``model`` column of every caption.
    model: str

    def generate(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        """One result per request, in order; raise when the batch fails as a whole."""

    def close(self) -> None:
        """Release the engine's resources (processes, connections)."""


class EngineBroken(BioCAPError, RuntimeError):
    """The engine fails every request, so going on would log every sample as failed."""


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def result_of(future: Future[list[Result]]) -> list[Result]:
    """``future.result()``, waking twice a second.

    Ctrl-C may be delivered to another thread (polars' pool, the engine's own);
    the main thread raises KeyboardInterrupt only when it next runs Python code,
    which an untimed wait would put off until the whole batch is done.
    """
    while True:
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            continue


def generate_isolated(
    engine: Engine,
    requests: Sequence[CaptionRequest],
    submitted: Future[list[Result]] | None = None,
) -> list[Result]:
    """``engine.generate`` with a failing batch split in halves until each failure stands alone.

    ``submitted`` is the batch already started with ``engine.submit``; its
    outcome stands for the first ``generate`` call.
    """
    if not requests:
        return []
    try:
        results = result_of(submitted) if submitted is not None else engine.generate(requests)
    except EngineBroken:
        raise
    except Exception as exc:
        if len(requests) == 1:
            return [Failure(describe(exc))]
        mid = len(requests) // 2
        return generate_isolated(engine, requests[:mid]) + generate_isolated(engine, requests[mid:])
    if len(results) != len(requests):
        raise EngineBroken(
            f"engine {engine.model} returned {len(results)} results for {len(requests)} requests"
        )
    return results
