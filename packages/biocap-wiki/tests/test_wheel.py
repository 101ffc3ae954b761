"""The wheel ships the spider and nothing of the test code (the MediaWiki stand-in stays in
tests/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent
REPO = PACKAGE.parents[1]


def test_the_wheel_holds_the_package_modules_and_no_test_support(tmp_path):
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not installed")
    built = subprocess.run(
        [uv, "build", "--package", "biocap-wiki", "--wheel", "--out-dir", str(tmp_path), "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("biocap_wiki-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    sources = {str(p.relative_to(PACKAGE / "src")) for p in (PACKAGE / "src").rglob("*.py")}
    assert shipped == sources
    support = {p.name for p in TESTS.glob("*.py")} - {"conftest.py"}
    assert {"standin.py", "wikitest.py"} <= support
    assert not {Path(n).name for n in shipped} & support
