"""Checkpoint files under failure: a full disk, a kill mid-write, a finished run resumed, an
unreadable newest."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from biocap_core.checkpoints import read_checkpoint
from biocap_core.errors import CheckpointError
from biocap_train import TrainConfig, checkpointing, train
from biocap_train.checkpointing import (
    CheckpointWriteError,
    checkpoint_path,
    list_checkpoints,
    save_checkpoint,
)
from biocap_train.cli import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """The trainer's console wraps at the terminal width (80 under pytest), which would split the
    paths."""
    monkeypatch.setenv("COLUMNS", "1000")


def cli_args(base_args, **extra) -> list[str]:
    args = {**base_args, **extra}
    argv = ["--no-progress"]
    for key, value in args.items():
        if key != "progress":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def full_disk(monkeypatch, error: BaseException) -> None:
    """torch.save writes part of the file, then fails as it does on a full disk; 1 KB is left
    free."""

    def save(obj, path):
        Path(path).write_bytes(b"PK" * 100)
        raise error

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    )


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3072 vs 2994"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_full_disk_names_the_checkpoint_and_the_cause(tmp_path, monkeypatch, error):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(10)}, keep=0)
    full_disk(monkeypatch, error)
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(1000)}, keep=0)
    message = str(caught.value)
    assert str(checkpoint_path(tmp_path, 2)) in message
    assert "no space left on device (1.0 KB free in" in message and "needs about 4.0 KB" in message
    assert "--resume latest" in message
    assert sorted(p.name for p in checkpointing.checkpoint_dir(tmp_path).iterdir()) == [
        "step_00000001.pt"
    ]


def test_the_cli_reports_a_full_disk_as_one_line(base_args, monkeypatch):
    full_disk(
        monkeypatch,
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3072 vs 2994"),
    )
    with pytest.raises(SystemExit) as caught:
        main(cli_args(base_args, steps=2))
    message = str(caught.value.code)
    assert (
        message.startswith("biocap-train: error: cannot write checkpoint ") and "\n" not in message
    )
    assert "step_00000002.pt: no space left on device" in message


def test_resume_removes_temp_files_of_an_interrupted_write(base_args, capfd):
    train(TrainConfig(**{**base_args, "steps": 2}))
    folder = checkpointing.checkpoint_dir(Path(base_args["logs"]) / "run")
    partial = folder / ".step_00000003.pt.tmp-4242"
    partial.write_bytes(b"half a checkpoint")
    result = train(TrainConfig(**{**base_args, "steps": 3, "resume": "latest"}))
    assert result.step == 3 and not partial.exists()
    err = capfd.readouterr().err
    assert (
        "removed 1 partial checkpoint file(s) of an interrupted write: .step_00000003.pt.tmp-4242"
        in err
    )
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002.pt", "step_00000003.pt"]


def test_resuming_a_finished_run_changes_nothing(base_args, capsys):
    assert main(cli_args(base_args, steps=2)) is None
    run_dir = Path(base_args["logs"]) / "run"
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    main(cli_args(base_args, steps=2, resume="latest"))
    out = capsys.readouterr()
    assert {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()
    } == files
    assert "already finished: " in out.err and "is at step 2 of 2; nothing to do" in out.err
    assert out.out.startswith(
        "already finished at step 2; nothing trained or written\ncheckpoint: "
    )
    assert str(checkpoint_path(run_dir, 2)) in out.out


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(base_args, capfd):
    args = {**base_args, "steps": 4, "save_every_n_steps": 2, "keep_checkpoints": 0}
    train(TrainConfig(**args))
    run_dir = Path(base_args["logs"]) / "run"
    newest = checkpoint_path(run_dir, 4)
    straight = read_checkpoint(newest)
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short
    capfd.readouterr()
    result = train(TrainConfig(**args, resume="latest"))
    err = capfd.readouterr().err
    assert "warning: " in err and "step_00000004.pt: cannot read checkpoint" in err
    assert "set aside as step_00000004.pt.unreadable, resuming from step_00000002.pt instead" in err
    assert "at step 2" in err and result.step == 4
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]
    assert (run_dir / "checkpoints" / "step_00000004.pt.unreadable").stat().st_size == 1000
    resumed = read_checkpoint(
        result.checkpoint
    )  # exact resume: the same weights as the uninterrupted run
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_no_readable_checkpoint_stops_instead_of_starting_over(base_args):
    args = {**base_args, "steps": 2}
    train(TrainConfig(**args))
    path = checkpoint_path(Path(base_args["logs"]) / "run", 2)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"--resume latest: no checkpoint of .* is readable"):
        train(TrainConfig(**args, resume="latest"))
    assert path.read_bytes() == b"garbage"
