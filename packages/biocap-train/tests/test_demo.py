"""The README's main command: ``biocap-train`` with no arguments, from an empty cache.

The run itself is the session fixture ``demo`` (the root conftest.py): biocap-predict's tests use the
model it trains, so it runs once for both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_no_argument_demo_learns_the_toy_tree_of_life(demo):
    run = demo.run
    assert run.returncode == 0, run.stderr[-3000:]
    assert (demo.cache / "toy-v1" / "manifest.json").is_file()  # generated on first use
    # progress: step, loss per head, samples/s, ETA
    assert re.search(r"step \d+/\d+: loss tax [\d.]+ caption [\d.]+ \| \d+ samples/s \| ETA \d+:\d\d", run.stderr)
    found = re.search(r"before ([\d.]+)% -> after ([\d.]+)% \(chance ([\d.]+)%\)", run.stdout)
    assert found, run.stdout
    before, after, chance = map(float, found.groups())
    assert after >= 3 * chance and after > before
    checkpoint = Path(re.search(r"checkpoint: (\S+)", run.stdout).group(1))
    assert checkpoint.is_file() and checkpoint.is_relative_to(demo.cwd / "logs")
