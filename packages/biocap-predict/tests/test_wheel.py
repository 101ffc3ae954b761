"""biocap-predict installs alone: wheels of biocap-core and biocap-predict into a fresh venv, outside the workspace.

As biocap-eval's wheel test: uv installs the two wheels (``uv pip install``, pip's interface) with the
workspace lock's versions as constraints, so third-party wheels come from uv's cache. What gets
installed is what the wheels' metadata asks for, which is what the test checks: core and predict,
not train, eval, captions, wiki, vLLM or Scrapy, and not the [web] extra's FastAPI.

The commands then run in one interpreter of that venv, through the installed ``biocap-predict``
entry point (what the console script calls): each start-up there costs about 5 CPU-seconds of
imports (torch, OpenCLIP), and the first one also compiles their bytecode.
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


def sh(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


#: Run by the venv's Python: what is installed, where biocap_predict imports from, and the exit code,
#: stdout and stderr of each command in argv[1] (a JSON list of argument lists), run through the
#: installed console-script entry point (a crash's traceback fails the probe with it on stderr).
PROBE = """
import importlib.metadata as m, json, sys
from typer.testing import CliRunner
import biocap_predict
(script,) = m.entry_points(group="console_scripts", name="biocap-predict")
app, runner = script.load(), CliRunner()
runs = [runner.invoke(app, args, catch_exceptions=False) for args in json.loads(sys.argv[1])]
print(json.dumps({"installed": sorted(d.metadata["Name"].lower() for d in m.distributions()),
                  "module": biocap_predict.__file__, "runs": [[r.exit_code, r.stdout, r.stderr] for r in runs]}))
"""


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory) -> Path:
    """12 toy species, 2 zero-shot images each: a random model needs no training images."""
    from biocap_core.toy import ToyConfig, generate

    out = tmp_path_factory.mktemp("toy")
    generate(out, ToyConfig(species=12, images_per_species=1, val_per_species=1, eval_per_species=2,
                            inquire_queries=2, inquire_candidates=10, image_size=64, shard_size=64))
    return out


def test_wheels_install_alone_and_predict_on_the_toy_tree_of_life(tmp_path, small_toy):
    wheels = tmp_path / "wheels"
    for package in ("biocap-core", "biocap-predict"):
        sh(uv(), "build", "--package", package, "--wheel", "--out-dir", wheels, "-q", cwd=REPO)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(sh(uv(), "export", "--package", "biocap-predict", "--no-emit-workspace", "--no-hashes",
                              "--no-dev", "--frozen", "--no-header", "-q", cwd=REPO).stdout)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "CONDA"))}
    venv = tmp_path / "venv"
    sh(uv(), "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    sh(uv(), "pip", "install", "-q", "--python", python, "--link-mode", "symlink", "-c", constraints,
       *sorted(wheels.glob("*.whl")), cwd=tmp_path, env=env)
    assert (venv / "bin" / "biocap-predict").is_file()

    weights = save_weights(build_model("BioCAP-toy"), tmp_path / "random.safetensors")  # a core model name
    model = ["--model", "BioCAP-toy", "--pretrained", str(weights), "--device", "cpu", "--quiet"]
    images, index = small_toy / "zeroshot" / "images", str(tmp_path / "idx")
    commands = [["index", "--taxa", str(small_toy / "catalog.parquet"), "--out", index, *model],
                ["predict", str(images), "--recursive", "--index", index, "--rank", "all", "--k", "1",
                 "--workers", "0", *model],
                ["list-models"],
                ["serve", "--index", index, *model[:4]]]
    probe = json.loads(sh(python, "-c", PROBE, json.dumps(commands), cwd=tmp_path, env=env).stdout)
    assert {"biocap-core", "biocap-predict", "torch", "typer"} <= set(probe["installed"])
    assert not set(FORBIDDEN) & set(probe["installed"])
    assert probe["module"].startswith(str(venv))
    (indexed, predicted, listed, served) = probe["runs"]
    assert indexed[0] == 0 and (tmp_path / "idx" / "index.json").is_file(), indexed
    assert predicted[0] == 0, predicted
    rows = list(csv.DictReader(io.StringIO(predicted[1])))
    assert len(rows) == 7 * len(list(images.rglob("*.jpg"))) > 0 and rows[0]["rank"] == "kingdom"
    assert listed[0] == 0 and "BioCAP-toy" in listed[1]
    assert served[0] == 1 and "biocap-predict[web]" in served[2]
