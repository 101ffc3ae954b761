"""Fixtures that tests of more than one package share: the no-argument demo's run, a venv outside
the workspace and an app installed alone from wheels in one, and the environment for child
processes.

``biocap-train`` with no arguments (the README's main command) is the suite's most expensive step.
biocap-train's test checks what it prints and writes, and biocap-predict's tests use the model it
trains and the toy tree of life it generates, so it runs once per test run. Under pytest-xdist every
test that needs it goes into one group, so it runs in one worker only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DEMO_GROUP = "biocap-demo"


def pytest_configure(config):
    """Every test process computes on one thread, and so do the processes tests start (they inherit
    the variable; torch reads it when it starts, after this). pytest-xdist runs one worker per core,
    the toy models gain nothing from more threads, and idle-spinning OpenMP threads beside another
    worker made small steps several times slower; ``train()`` leaves the thread count alone when it
    is set.
    """
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(items):
    for item in items:
        # fixturenames: the whole fixture closure of a test function
        if "demo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(DEMO_GROUP))


@dataclass(frozen=True)
class DemoRun:
    run: subprocess.CompletedProcess
    cwd: Path  #: where it ran; its logs/ go here
    cache: Path  #: $BIOCAP_CACHE, empty before the run


@pytest.fixture(scope="session")
def child_env() -> dict:
    """Environment for child processes: on one thread as the parent (:func:`pytest_configure`), no
    stray torchrun variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "LOCAL_WORLD_SIZE",
        )
    }


@pytest.fixture(scope="session")
def demo(tmp_path_factory, child_env) -> DemoRun:
    """``python -m biocap_train`` without arguments, from an empty cache; skipped without
    biocap-train."""
    pytest.importorskip("biocap_train")
    cwd = tmp_path_factory.mktemp("demo")
    # the demo picks its own thread count
    env = {k: v for k, v in child_env.items() if k != "OMP_NUM_THREADS"}
    env["BIOCAP_CACHE"] = str(cwd / "cache")
    run = subprocess.run(
        [sys.executable, "-m", "biocap_train"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return DemoRun(run, cwd, cwd / "cache")


REPO = Path(__file__).resolve().parent

#: Run by the venv's Python: what is installed, where the app imports from, and the exit code,
#: stdout and stderr of each command in argv[2] (a JSON list of argument lists), run through the
#: installed console-script entry point argv[1] (a crash's traceback fails the probe with it on
#: stderr).
PROBE = """
import importlib, importlib.metadata as m, json, sys
from typer.testing import CliRunner
(script,) = m.entry_points(group="console_scripts", name=sys.argv[1])
app, runner = script.load(), CliRunner()
runs = [runner.invoke(app, args, catch_exceptions=False) for args in json.loads(sys.argv[2])]
module = importlib.import_module(sys.argv[1].replace("-", "_"))
installed = sorted(d.metadata["Name"].lower() for d in m.distributions())
runs = [[r.exit_code, r.stdout, r.stderr] for r in runs]
print(json.dumps({"installed": installed, "module": module.__file__, "runs": runs}))
"""


@dataclass(frozen=True)
class InstalledAlone:
    """An app and biocap-core installed from their wheels in a fresh venv outside the workspace."""

    app: str
    venv: Path
    env: dict
    cwd: Path  #: where its commands run (the test's tmp_path)

    def run(self, commands: list[list[str]]) -> dict:
        """The app's ``commands``, in one interpreter of the venv (each start-up costs about 5
        CPU-seconds of imports, torch and OpenCLIP), with what is installed and where the app
        imports from."""
        return json.loads(
            _sh(
                self.venv / "bin" / "python",
                "-c",
                PROBE,
                self.app,
                json.dumps(commands),
                cwd=self.cwd,
                env=self.env,
            )
        )


#: Where an app's venv is made, anew for each test, with its bytecode kept beside it between runs: a
#: new venv's first interpreter compiles torch's and OpenCLIP's modules, 8 of a probe's 15 s
#: (measured). At the same path every run, ``PYTHONPYCACHEPREFIX`` finds that bytecode again
#: (checked against each source's size and mtime, as always); a lock per app keeps two test runs out
#: of each other's venv.
INSTALL_ROOT = Path(os.environ.get("BIOCAP_TEST_VENVS", "~/.cache/biocap/test-venvs")).expanduser()


@dataclass(frozen=True)
class ScratchVenv:
    """A venv outside the workspace, and what installs into it and runs it."""

    venv: Path
    env: dict  #: a clean environment: no workspace venv, no project discovery, the kept bytecode
    uv: str
    cwd: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def install(self, *requirements, constraints_of: str) -> None:
        """``uv pip install`` (pip's interface) ``requirements``, with the workspace lock's versions
        of ``constraints_of``'s dependencies as constraints, so every third-party wheel the lock has
        comes from uv's cache (linked, not copied) instead of a multi-GB download. The constraints
        pin versions; what gets installed is what the requirements' metadata asks for. A kept venv
        that has installed the same requirements under the same constraints is left as it is."""
        constraints = self.cwd / "constraints.txt"
        constraints.write_text(
            _sh(
                self.uv,
                "export",
                "--package",
                constraints_of,
                "--no-hashes",
                "--no-emit-workspace",
                "--no-dev",
                "--frozen",
                "--no-header",
                "-q",
                cwd=REPO,
            )
        )
        stamp = self.venv / "installed.json"
        key = json.dumps([*map(str, requirements), constraints.read_text()])
        if stamp.is_file() and stamp.read_text() == key:
            return
        _sh(
            self.uv,
            "pip",
            "install",
            "-q",
            "--python",
            self.python,
            "--link-mode",
            "symlink",
            "-c",
            constraints,
            *requirements,
            cwd=self.cwd,
            env=self.env,
        )
        stamp.write_text(key)


@pytest.fixture
def scratch_venv(tmp_path):
    """``scratch_venv("name")``: a new venv at ``INSTALL_ROOT/name``, its bytecode kept beside it,
    locked against other test runs until the test ends; ``keep=True`` reuses the venv of an
    earlier run, for third-party packages at pinned versions (removing the venv, making it anew
    and linking torch into it took 51 s on the 2-core development machine under load, measured)."""
    uv = os.environ.get("UV") or shutil.which("uv") or pytest.fail("uv is not on PATH")

    def make(name: str, keep: bool = False) -> ScratchVenv:
        home = INSTALL_ROOT / name
        home.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(home / "lock", "w"))
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the test ends
        dropped = ("VIRTUAL_ENV", "UV_PROJECT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "CONDA")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env["PYTHONPYCACHEPREFIX"] = str(home / "bytecode")
        venv = home / "venv"
        if not keep:
            shutil.rmtree(venv, ignore_errors=True)
        if not (venv / "bin" / "python").is_file():
            _sh(uv, "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path, env=env)
        return ScratchVenv(venv, env, uv, tmp_path)

    with contextlib.ExitStack() as stack:
        yield make


@pytest.fixture
def install_alone(scratch_venv, tmp_path):
    """``install_alone("biocap-eval")``: builds the wheels of biocap-core and the app and installs
    them into a new venv (:meth:`ScratchVenv.install`, the app's locked versions as constraints)."""

    def install(app: str) -> InstalledAlone:
        made = scratch_venv(app)
        wheels = tmp_path / "wheels"
        for package in ("biocap-core", app):
            _sh(
                made.uv,
                "build",
                "--package",
                package,
                "--wheel",
                "--out-dir",
                wheels,
                "-q",
                cwd=REPO,
            )
        made.install(*sorted(wheels.glob("*.whl")), constraints_of=app)
        assert (made.venv / "bin" / app).is_file()
        return InstalledAlone(app, made.venv, made.env, tmp_path)

    return install


def _sh(*args, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"{args}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    return done.stdout
