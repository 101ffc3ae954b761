"""A run killed with SIGKILL and resumed ends with exactly the parameters of an uninterrupted
run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch

from biocap_core.checkpoints import read_checkpoint
from biocap_train.checkpointing import checkpoint_path, list_checkpoints
from biocap_train.cli import main


def argv(base_args, name, *extra) -> list[str]:
    args = {
        **base_args,
        "workers": 2,
        "name": name,
        "seed": 1,
        "save_every_n_steps": 1,
        "keep_checkpoints": 0,
    }
    out = ["--no-progress"]
    for key in (
        "train_data",
        "model",
        "batch_size",
        "train_num_samples",
        "epochs",
        "lr",
        "warmup",
        "precision",
        "workers",
        "shuffle_buffer",
        "logs",
        "name",
        "seed",
        "save_every_n_steps",
        "keep_checkpoints",
        "device",
    ):
        out += [f"--{key.replace('_', '-')}", str(args[key])]
    return out + list(extra)


def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(
    base_args, tmp_path, child_env, capfd
):
    """Only the killed run is a child process (SIGKILL needs one); the uninterrupted run and the
    resumed one call the same command line in this process, which saves two interpreter start-ups.
    Both processes compute on one thread (the root conftest's OMP_NUM_THREADS), so their float
    reductions match.
    """
    # 80 samples / batch 16 = 5 steps per epoch, 2 epochs; 2 data workers, so resuming at step 3
    # restarts mid-epoch with the worker streams rotated.
    main(argv(base_args, "straight"))

    run_dir = tmp_path / "logs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "biocap_train", *argv(base_args, "killed")],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while (
        not checkpoint_path(run_dir, 3).exists() and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint_path(run_dir, 3).exists()
    for step, path in list_checkpoints(run_dir):  # whatever it got to, continue from step 3
        if step > 3:
            path.unlink()

    capfd.readouterr()
    main(argv(base_args, "killed", "--resume", "latest"))
    resumed = capfd.readouterr().err
    assert "at step 3" in resumed and "not bit-identical" not in resumed

    a = read_checkpoint(checkpoint_path(tmp_path / "logs" / "straight", 10))
    b = read_checkpoint(checkpoint_path(run_dir, 10))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
