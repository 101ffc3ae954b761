"""Fixtures that tests of more than one package share: the no-argument demo's run.

``biocap-train`` with no arguments (the README's main command) is the suite's most expensive step.
biocap-train's test checks what it prints and writes, and biocap-predict's tests use the model it
trains and the toy tree of life it generates, so it runs once per session. Under pytest-xdist every
test that needs it goes into one group, so it runs in one worker only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DEMO_GROUP = "biocap-demo"


def pytest_configure(config):
    """Every test process computes on one thread, and so do the processes tests start (they inherit
    the variable; torch reads it when it starts, after this). pytest-xdist runs one worker per core, the
    toy models gain nothing from more threads, and idle-spinning OpenMP threads beside another worker
    made small steps several times slower; ``train()`` leaves the thread count alone when it is set."""
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(items):
    for item in items:
        if "demo" in getattr(item, "fixturenames", ()):  # the whole fixture closure of a test function
            item.add_marker(pytest.mark.xdist_group(DEMO_GROUP))


@dataclass(frozen=True)
class DemoRun:
    run: subprocess.CompletedProcess
    cwd: Path  #: where it ran; its logs/ go here
    cache: Path  #: $BIOCAP_CACHE, empty before the run


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> DemoRun:
    """``python -m biocap_train`` without arguments, from an empty cache; skipped without biocap-train."""
    pytest.importorskip("biocap_train")
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS")}
    env["BIOCAP_CACHE"] = str(cwd / "cache")  # OMP_NUM_THREADS unset: the demo picks its own thread count
    run = subprocess.run([sys.executable, "-m", "biocap_train"], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)
    return DemoRun(run, cwd, cwd / "cache")
