"""biocap-predict installs alone: wheels of biocap-core and biocap-predict into a fresh venv, outside the workspace.

As biocap-eval's wheel test: uv installs the two wheels (``uv pip install``, pip's interface) with the
workspace lock's versions as constraints, so third-party wheels come from uv's cache. What gets
installed is what the wheels' metadata asks for, which is what the test checks: core and predict,
not train, eval, captions, wiki, vLLM or Scrapy, and not the [web] extra's FastAPI.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biocap_core.checkpoints import save_weights
from biocap_core.model import build_model

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
FORBIDDEN = ("biocap-train", "biocap-eval", "biocap-captions", "biocap-wiki", "vllm", "scrapy", "fastapi")


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        pytest.skip("uv is not installed")
    return found


def sh(*args, cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


def test_wheels_install_alone_and_predict_on_the_toy_tree_of_life(tmp_path, toy_dir):
    wheels = tmp_path / "wheels"
    for package in ("biocap-core", "biocap-predict"):
        sh(uv(), "build", "--package", package, "--wheel", "--out-dir", wheels, "-q", cwd=REPO)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(sh(uv(), "export", "--package", "biocap-predict", "--no-emit-workspace", "--no-hashes",
                              "--no-dev", "--frozen", "--no-header", "-q", cwd=REPO).stdout)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "CONDA"))}
    env["OMP_NUM_THREADS"] = "1"
    venv = tmp_path / "venv"
    sh(uv(), "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path, env=env)
    python, cli = venv / "bin" / "python", venv / "bin" / "biocap-predict"
    sh(uv(), "pip", "install", "-q", "--python", python, "--link-mode", "symlink", "-c", constraints,
       *sorted(wheels.glob("*.whl")), cwd=tmp_path, env=env)

    installed = json.loads(sh(python, "-c", "import importlib.metadata as m, json; "
                                            "print(json.dumps(sorted(d.metadata['Name'].lower() "
                                            "for d in m.distributions())))", cwd=tmp_path, env=env).stdout)
    assert {"biocap-core", "biocap-predict", "torch", "typer"} <= set(installed)
    assert not set(FORBIDDEN) & set(installed)
    assert str(venv) in sh(python, "-c", "import biocap_predict; print(biocap_predict.__file__)",
                           cwd=tmp_path, env=env).stdout

    weights = save_weights(build_model("BioCAP-toy"), tmp_path / "random.safetensors")  # a core model name
    model = ["--model", "BioCAP-toy", "--pretrained", weights, "--device", "cpu", "--quiet"]
    sh(cli, "index", "--taxa", toy_dir / "catalog.parquet", "--out", tmp_path / "idx", *model, cwd=tmp_path, env=env)
    images = toy_dir / "zeroshot" / "images"
    out = sh(cli, "predict", images, "--recursive", "--index", tmp_path / "idx", "--rank", "all", "--k", "1",
             "--workers", "0", *model, cwd=tmp_path, env=env).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 7 * len(list(images.rglob("*.jpg"))) and rows[0]["rank"] == "kingdom"
    assert "BioCAP-toy" in sh(cli, "list-models", cwd=tmp_path, env=env).stdout
    served = sh(cli, "serve", "--index", tmp_path / "idx", *model[:4], cwd=tmp_path, env=env, ok=False)
    assert served.returncode == 1 and "biocap-predict[web]" in served.stderr
