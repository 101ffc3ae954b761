"""biocap-eval installs alone: wheels of biocap-core and biocap-eval into a fresh venv, outside the workspace.

uv installs them (``uv pip install``, pip's interface) with the workspace lock's versions as
constraints, so every third-party wheel comes from uv's cache instead of a multi-GB download, and
links files from the cache instead of copying them. The constraints only pin versions; what gets
installed is what the two wheels' metadata asks for, which is what the test checks.

The commands then run in one interpreter of that venv, through the installed ``biocap-eval`` entry
point (what the console script calls): each start-up there costs about 5 CPU-seconds of imports
(torch, OpenCLIP), and the first one also compiles their bytecode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
FORBIDDEN = ("biocap-train", "biocap-captions", "biocap-wiki", "vllm", "scrapy")


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        pytest.skip("uv is not installed")
    return found


def sh(*args, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done.stdout


#: Run by the venv's Python: what is installed, where biocap_eval imports from, and the exit code,
#: stdout and stderr of each command in argv[1] (a JSON list of argument lists), run through the
#: installed console-script entry point (a crash's traceback fails the probe with it on stderr).
PROBE = """
import importlib.metadata as m, json, sys
from typer.testing import CliRunner
import biocap_eval
(script,) = m.entry_points(group="console_scripts", name="biocap-eval")
app, runner = script.load(), CliRunner()
runs = [runner.invoke(app, args, catch_exceptions=False) for args in json.loads(sys.argv[1])]
print(json.dumps({"installed": sorted(d.metadata["Name"].lower() for d in m.distributions()),
                  "module": biocap_eval.__file__, "runs": [[r.exit_code, r.stdout, r.stderr] for r in runs]}))
"""


def test_wheels_install_alone_and_run_the_toy_benchmarks(tmp_path, toy_dir):
    wheels = tmp_path / "wheels"
    for package in ("biocap-core", "biocap-eval"):
        sh(uv(), "build", "--package", package, "--wheel", "--out-dir", wheels, "-q", cwd=REPO)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(sh(uv(), "export", "--package", "biocap-eval", "--no-emit-workspace", "--no-hashes",
                              "--no-dev", "--frozen", "--no-header", "-q", cwd=REPO))
    # a clean environment: no workspace venv, no project discovery (cwd is outside the repo)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "CONDA"))}
    venv = tmp_path / "venv"
    sh(uv(), "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    sh(uv(), "pip", "install", "-q", "--python", python, "--link-mode", "symlink", "-c", constraints,
       *sorted(wheels.glob("*.whl")), cwd=tmp_path, env=env)
    assert (venv / "bin" / "biocap-eval").is_file()

    out = tmp_path / "results"  # a core model name: resolves with eval installed alone
    commands = [["run", "--model", "BioCAP-toy", "--data-root", str(toy_dir), "--benchmarks", "toy", "--out", str(out),
                 "--workers", "0", "--quiet"],
                ["report", str(out)]]
    probe = json.loads(sh(python, "-c", PROBE, json.dumps(commands), cwd=tmp_path, env=env))
    assert {"biocap-core", "biocap-eval", "torch", "matplotlib"} <= set(probe["installed"])
    assert not set(FORBIDDEN) & set(probe["installed"])
    assert "datasets" not in probe["installed"]  # the [hf] extra stays optional
    assert probe["module"].startswith(str(venv))
    (ran, reported) = probe["runs"]
    assert ran[0] == 0, ran
    results = {p.stem: json.loads(p.read_text()) for p in (out / "BioCAP-toy").glob("*.json")}
    assert sorted(results) == ["toy-inquire", "toy-retrieval", "toy-zeroshot", "toy-zeroshot-asis"], ran
    assert results["toy-inquire"]["versions"]["biocap-eval"] == "0.1.0"
    assert reported[0] == 0 and "| Model |" in reported[1] and (out / "report.png").is_file(), reported
