"""The cache folder ($BIOCAP_CACHE, else $XDG_CACHE_HOME/biocap, else ~/.cache/biocap) and its
command."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from biocap_core.cache import cache_dir
from biocap_core.cli import app


def test_the_cache_folder_honours_biocap_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOCAP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "biocap"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "biocap"
    monkeypatch.setenv("BIOCAP_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_cache_dir_prints_the_folder_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOCAP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(app, ["cache-dir"])
    assert result.exit_code == 0 and result.output == f"{tmp_path / 'xdg' / 'biocap'}\n"
    assert not Path(result.output.strip()).exists()  # printing it creates nothing
