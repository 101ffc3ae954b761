"""The small interface every caption engine implements, failure isolation around it, and
:class:`EngineSettings`, which names an engine and starts it with its own options.

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

from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

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
    """What the pipeline needs from an engine (``submit`` and ``prepare`` are optional; see the module docs)."""

    #: Recorded in the ``model`` column of every caption.
    model: str

    def generate(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        """One result per request, in order; raise when the batch fails as a whole."""

    def close(self) -> None:
        """Release the engine's resources (processes, connections)."""


class EngineBroken(BioCAPError, RuntimeError):
    """The engine fails every request, so going on would log every sample as failed."""


#: The engines by name, each with the keyword arguments of its own that :class:`EngineSettings` holds.
ENGINE_OPTIONS: dict[str, tuple[str, ...]] = {
    "vllm": ("quantization", "tensor_parallel_size", "max_model_len", "dtype", "image_placeholder",
             "max_image_side", "enable_prefix_caching"),
    "openai": ("base_url", "api_key", "concurrency", "timeout", "max_retries"),
}


@dataclass(frozen=True)
class EngineSettings:
    """An engine by name, with the options of every engine as a command line gives them.

    :meth:`build` hands the chosen engine only its own options (:data:`ENGINE_OPTIONS`), so a
    caller sets them all without knowing which engine takes which.
    """

    name: str = "vllm"
    model: str = DEFAULT_MODEL
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # vllm
    quantization: str | None = "awq"
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    dtype: str = "auto"
    #: For chat templates that take only text; None requires image parts.
    image_placeholder: str | None = "<image>"
    max_image_side: int | None = None
    #: None leaves vLLM's own default.
    enable_prefix_caching: bool | None = None
    # openai
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    concurrency: int = 16
    timeout: float = 120.0
    max_retries: int = 5

    def __post_init__(self) -> None:
        if self.name not in ENGINE_OPTIONS:
            raise ValueError(f"unknown engine {self.name!r}; use {' or '.join(ENGINE_OPTIONS)}")

    def options(self) -> dict[str, object]:
        """The chosen engine's own keyword arguments."""
        return {name: getattr(self, name) for name in ENGINE_OPTIONS[self.name]}

    def record(self) -> dict[str, object]:
        """What a run manifest keeps of these settings: everything the engine gets but the API key."""
        return {"engine": self.name, "model": self.model, "sampling": asdict(self.sampling),
                "options": {k: v for k, v in self.options().items() if k != "api_key"}}

    def build(self) -> Engine:
        """Start the engine: load the vLLM model, or check that the server answers.

        Raises ImportError when vLLM is not installed, :class:`EngineBroken` when the server cannot be used.
        """
        if self.name == "vllm":
            from biocap_captions.vllm_engine import VLLMEngine

            return VLLMEngine(model=self.model, sampling=self.sampling, **self.options())
        from biocap_captions.openai_engine import OpenAIEngine

        return OpenAIEngine(model=self.model, sampling=self.sampling, **self.options())


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


def generate_isolated(engine: Engine, requests: Sequence[CaptionRequest],
                      submitted: Future[list[Result]] | None = None) -> list[Result]:
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
        raise EngineBroken(f"engine {engine.model} returned {len(results)} results for {len(requests)} requests")
    return results
