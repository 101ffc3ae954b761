"""The engine registry: a registered engine is found by name and gets its own options."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from biocap_captions import engines
from biocap_captions.cli import app
from biocap_captions.engine import Completion, SamplingConfig
from biocap_captions.engines import ENGINES, EngineEntry, EngineSettings
from biocap_captions.openai_engine import OpenAIOptions
from biocap_captions.vllm_engine import VLLMOptions
from biocap_core import schemas


@dataclass(frozen=True)
class StampOptions:
    word: str = "plain"
    marks: int = 1
    loud: bool = False


class StampEngine:
    """Captions every image with its options' word and marks."""

    built: list[StampEngine] = []

    def __init__(self, model: str, sampling: SamplingConfig, options: StampOptions):
        self.model, self.sampling, self.options = model, sampling, options
        StampEngine.built.append(self)

    def generate(self, requests):
        text = f"A {self.options.word} body with {self.options.marks} marks."
        return [
            Completion(text.upper() if self.options.loud else text, "stop", 6) for _ in requests
        ]

    def close(self):
        pass


@pytest.fixture
def stamp_engine(monkeypatch):
    """The stamp engine registered as ``stamp``: the one line a new engine adds to ENGINES."""
    monkeypatch.setitem(ENGINES, "stamp", EngineEntry(StampEngine, StampOptions))
    StampEngine.built.clear()
    return StampEngine


def run_stamp(shards: str, out: Path, *options: str, flags: tuple[str, ...] = ()):
    """``biocap-captions run`` with the stamp engine; ``options`` are its NAME=VALUE options."""
    args = ["run", "--shards", shards, "--out", str(out), "--engine", "stamp", "--no-progress"]
    args += [arg for option in options for arg in ("--engine-option", option)]
    return CliRunner().invoke(app, args + list(flags))


def test_a_registered_engine_runs_from_the_command_line_with_its_options(
    toy_dir, tmp_path, stamp_engine
):
    out = tmp_path / "out"
    # --base-url is another engine's flag: not this engine's business
    flags = ("--model", "stamp-1", "--temperature", "0.3", "--base-url", "http://ignored/v1")
    result = run_stamp(
        str(toy_dir / "train" / "shard-{000000..000001}.tar"),
        out,
        "word=striped",
        "marks=3",
        "loud=no",
        flags=flags,
    )
    assert result.exit_code == 0, result.output
    (engine,) = stamp_engine.built
    assert engine.options == StampOptions("striped", 3, False)
    assert engine.sampling.temperature == 0.3
    tables = sorted((out / "captions").glob("*.parquet"))
    captions = pl.concat([schemas.CAPTIONS.read(p) for p in tables])
    assert captions.height == 20 and set(captions["caption"]) == {"A striped body with 3 marks."}
    assert set(captions["model"]) == {"stamp-1"}
    (manifest,) = (out / "runs").glob("*.json")
    settings = json.loads(manifest.read_text())
    assert settings["engine"] == "stamp"
    assert settings["options"] == {"word": "striped", "marks": 3, "loud": False}


def test_the_engine_names_in_the_help_come_from_the_registry(monkeypatch):
    import importlib

    from biocap_captions import cli

    monkeypatch.setitem(ENGINES, "stamp", EngineEntry(StampEngine, StampOptions))
    fresh = importlib.reload(cli)
    try:
        result = CliRunner().invoke(fresh.app, ["run", "--help"], terminal_width=200)
        assert "vllm, openai, stamp" in " ".join(result.output.split())
    finally:
        monkeypatch.undo()
        importlib.reload(cli)


def test_an_option_the_chosen_engine_lacks_is_an_error_naming_its_options(
    toy_dir, tmp_path, stamp_engine
):
    out = tmp_path / "out"
    result = run_stamp(str(toy_dir / "train" / "shard-000000.tar"), out, "colour=red")
    assert result.exit_code == 2
    expected = "the stamp engine's options are NAME=VALUE with NAME one of word, marks, loud"
    assert expected in result.output
    assert not stamp_engine.built and not out.exists()
    bad = run_stamp("x.tar", out, "marks=many")
    assert bad.exit_code == 2 and "'many' is not of type int" in bad.output


def test_each_engine_takes_only_its_own_flags_and_typed_engine_options():
    flags = dict(
        quantization="none", max_model_len=None, base_url="http://node:8000/v1", concurrency=32
    )
    vllm = EngineSettings.from_flags(
        "vllm",
        "m",
        SamplingConfig(),
        flags,
        ["enable-prefix-caching=off", "max_image_side=1792", "dtype=bfloat16"],
    )
    assert vllm.options == VLLMOptions(
        quantization="none", enable_prefix_caching=False, max_image_side=1792, dtype="bfloat16"
    )
    openai = EngineSettings.from_flags(
        "openai", "m", SamplingConfig(), flags, ["api_key=none", "timeout=2.5"]
    )
    assert openai.options == OpenAIOptions(
        base_url="http://node:8000/v1", concurrency=32, timeout=2.5
    )
    assert EngineSettings("openai").options == OpenAIOptions()
    with pytest.raises(TypeError, match="the vllm engine takes VLLMOptions, not OpenAIOptions"):
        EngineSettings("vllm", options=OpenAIOptions())
    with pytest.raises(ValueError, match="unknown engine 'tgi'; use vllm or openai"):
        engines.entry("tgi")
