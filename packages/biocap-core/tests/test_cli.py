"""``biocap-core toy`` and ``export``: an --out that cannot be a writable folder fails in one line
naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biocap_core.cli import app


def _invoke(command: str, out: Path, tmp_path: Path, tiny_cfg: dict):
    if command == "toy":
        return CliRunner().invoke(app, ["toy", "--out", str(out), "--species", "2"])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_cfg))
    return CliRunner().invoke(app, ["export", str(config), "--out", str(out)])


def _outs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-file").write_text("not a folder")
    return {
        "under-a-file": tmp_path / "a-file" / "out",
        "is-a-file": tmp_path / "a-file",
        "under-a-device": Path("/dev/null/out"),
        "where-nothing-may-be-created": Path("/proc/biocap-core-test/out"),
    }


@pytest.mark.parametrize(
    "kind", ["under-a-file", "is-a-file", "under-a-device", "where-nothing-may-be-created"]
)
@pytest.mark.parametrize("command", ["toy", "export"])
def test_an_unusable_out_is_one_line_naming_it(tmp_path, tiny_cfg, command, kind):
    out = _outs(tmp_path)[kind]
    if not out.parent.parent.exists():
        pytest.skip(f"{out.parent.parent} does not exist here")
    result = _invoke(command, out, tmp_path, tiny_cfg)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), "a traceback, not a message"
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {out}: "), result.output


@pytest.mark.parametrize("command", ["toy", "export"])
def test_a_folder_that_may_not_be_written_is_one_line_naming_it(tmp_path, tiny_cfg, command):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o500)
    if os.access(out, os.W_OK):
        pytest.skip("this user may write anywhere (root)")
    result = _invoke(command, out, tmp_path, tiny_cfg)
    assert (
        result.exit_code == 1
        and result.output.strip() == f"error: --out {out}: the folder is not writable"
    )


def test_export_creates_a_nested_out_folder(tmp_path, tiny_cfg):
    out = tmp_path / "new" / "nested"
    result = _invoke("export", out, tmp_path, tiny_cfg)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
