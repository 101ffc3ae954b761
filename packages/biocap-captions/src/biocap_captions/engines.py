"""The caption engines by name, and :class:`EngineSettings`, which starts one with its own options.

An engine is a class that implements :class:`~biocap_captions.engine.Engine` and takes
``(model, sampling, options)``, where ``options`` is an instance of its own frozen dataclass
of options. A new engine is its module plus one line in :data:`ENGINES`; the command line
lists the names from here and sets any option with ``--engine-option NAME=VALUE``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from biocap_captions.engine import DEFAULT_MODEL, Engine, SamplingConfig
from biocap_captions.openai_engine import OpenAIEngine, OpenAIOptions
from biocap_captions.vllm_engine import VLLMEngine, VLLMOptions


class EngineEntry(NamedTuple):
    """An engine class and the dataclass of its options."""

    engine: type
    options: type


#: The engines by name. vLLM itself is imported only when the vllm engine is built.
ENGINES: dict[str, EngineEntry] = {
    "vllm": EngineEntry(VLLMEngine, VLLMOptions),
    "openai": EngineEntry(OpenAIEngine, OpenAIOptions),
}


def entry(name: str) -> EngineEntry:
    """The registered engine ``name``; ValueError naming the engines there are."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; use {' or '.join(ENGINES)}") from None


@dataclass(frozen=True)
class EngineSettings:
    """An engine by name, its model, sampling and its own options (None: the engine's defaults)."""

    name: str = "vllm"
    model: str = DEFAULT_MODEL
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    options: Any = None

    def __post_init__(self) -> None:
        kind = entry(self.name).options
        if self.options is None:
            object.__setattr__(self, "options", kind())
        elif not isinstance(self.options, kind):
            raise TypeError(
                f"the {self.name} engine takes {kind.__name__}, not {type(self.options).__name__}"
            )

    @classmethod
    def from_flags(
        cls,
        name: str,
        model: str,
        sampling: SamplingConfig,
        flags: Mapping[str, object],
        extra: Iterable[str] = (),
    ) -> EngineSettings:
        """Settings from a command line: of ``flags`` (every engine's typed options, None where not
        given) the chosen engine takes its own and ignores the others; ``extra`` are
        ``NAME=VALUE`` texts, each an option of the chosen engine (ValueError otherwise)."""
        kind = entry(name).options
        own = {f.name for f in dataclasses.fields(kind)}
        values = {k: v for k, v in flags.items() if k in own and v is not None}
        values |= parse_options(kind, extra, engine=name)
        return cls(name, model, sampling, kind(**values))

    def record(self) -> dict[str, object]:
        """What a run manifest keeps of these settings: all the engine gets but the API key."""
        options = {k: v for k, v in asdict(self.options).items() if k != "api_key"}
        return {
            "engine": self.name,
            "model": self.model,
            "sampling": asdict(self.sampling),
            "options": options,
        }

    def build(self) -> Engine:
        """Start the engine: load the vLLM model, or check that the server answers.

        Raises ImportError when vLLM is not installed, :class:`~biocap_captions.engine.EngineBroken`
        when the server cannot be used.
        """
        return entry(self.name).engine(
            model=self.model, sampling=self.sampling, options=self.options
        )


def parse_options(kind: type, texts: Iterable[str], engine: str) -> dict[str, object]:
    """``NAME=VALUE`` texts as keyword arguments of the options dataclass ``kind``, each converted
    to its field's type (``none`` gives None where the field allows it)."""
    types = typing.get_type_hints(kind)
    values: dict[str, object] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in types:
            raise ValueError(
                f"--engine-option {text!r}: the {engine} engine's options are NAME=VALUE with NAME "
                f"one of {', '.join(types)}"
            )
        try:
            values[name] = _convert(raw.strip(), types[name])
        except ValueError:
            raise ValueError(
                f"--engine-option {text!r}: {raw!r} is not of type {_type_name(types[name])}"
            ) from None
    return values


def _convert(raw: str, kind: object) -> object:
    args = typing.get_args(kind)
    if type(None) in args:
        if raw.lower() == "none":
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return kind(raw)  # str, int, float


def _type_name(kind: object) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(kind) or (kind,))
