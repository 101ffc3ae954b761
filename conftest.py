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


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "demo" in getattr(item, "fixturenames", ()):  # the whole fixture closure of a test function
            item.add_marker(pytest.mark.xdist_group(DEMO_GROUP))
    yield
    if getattr(config.option, "loadgroup", False):  # in a pytest-xdist worker under --dist loadgroup
        for item in items:
            _name_the_group_in_the_node_id(item)


def _name_the_group_in_the_node_id(item) -> None:
    """What pytest-xdist 3.8 does for --dist loadgroup, in pytest 9.2's node ids.

    The worker tells the scheduler a test's group as a ``@group`` suffix of its node id. xdist 3.8
    writes it into ``item._nodeid``, which pytest 9.2 no longer reads, so every group was silently
    spread over all workers (pytest-dev/pytest-xdist#1386, fix pending in #1388); this writes it
    into pytest's structured ``item._id`` instead, and does nothing where xdist's own suffix took.
    """
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    suffix = "@" + "_".join(groups)
    if groups and not item.nodeid.endswith(suffix):
        from _pytest.nodeid import NodeId  # pytest >= 9.2 only, where xdist's suffix does not take

        item._id = NodeId.parse(item.nodeid + suffix)


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
