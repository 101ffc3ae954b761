"""``logs/demo/latest``: the newest demo run, so commands written once work after another run."""

from __future__ import annotations

import shlex
from pathlib import Path

from biocap_train import demo
from biocap_train.demo import mark_latest, next_commands


def test_latest_follows_the_newest_run(tmp_path):
    logs = tmp_path / "logs"
    first, second = logs / "demo-20261204-100000", logs / "demo-20261204-110000"
    for run in (first, second):
        (run / "checkpoints").mkdir(parents=True)
    assert mark_latest(first) == logs / "demo" / "latest"
    assert (logs / "demo" / "latest").resolve() == first.resolve()
    mark_latest(second)
    link = logs / "demo" / "latest"
    assert link.is_symlink() and link.resolve() == second.resolve()
    assert link.readlink() == Path("..") / second.name  # relative: the logs folder can move
    assert sorted(p.name for p in (logs / "demo").iterdir()) == ["latest"]  # no staged leftovers


def test_latest_is_a_file_naming_the_run_where_symlinks_cannot_be_made(tmp_path, monkeypatch):
    run = tmp_path / "logs" / "demo-20261204-100000"
    run.mkdir(parents=True)

    def refuse(self, *args, **kwargs):
        raise OSError("operation not permitted")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    latest = mark_latest(run)
    assert latest.is_file() and latest.read_text() == f"{run.resolve()}\n"


def test_the_next_commands_quote_their_paths_and_use_uv_run_only_under_uv(tmp_path, monkeypatch):
    toy = tmp_path / "my cache" / "toy-v4"
    checkpoint = tmp_path / "logs" / "demo-1" / "checkpoints" / "step_00001024.pt"
    monkeypatch.delenv("UV", raising=False)
    plain = next_commands(checkpoint, "BioCAP-toy", toy)
    assert [shlex.split(c)[:2] for c in plain][0] == ["biocap-eval", "run"]
    index = shlex.split(plain[1])
    assert index[index.index("--taxa") + 1] == str(toy / "catalog.parquet")
    monkeypatch.setenv("UV", "/usr/bin/uv")
    assert all(c.startswith("uv run biocap-") for c in next_commands(checkpoint, "BioCAP-toy", toy))
    monkeypatch.setenv("BIOCAP_CACHE", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere" / "toy-v4") in next_commands(checkpoint, "BioCAP-toy")[0]
    assert demo.toy_root() == tmp_path / "elsewhere" / "toy-v4"
