"""A run killed with SIGKILL and resumed ends with exactly the parameters of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch
from biocap_core.checkpoints import read_checkpoint
from biocap_train.checkpointing import checkpoint_path, list_checkpoints


def cli(base_args, name, *extra):
    args = {**base_args, "workers": 2, "name": name, "seed": 1, "save_every_n_steps": 1, "keep_checkpoints": 0}
    cmd = [sys.executable, "-m", "biocap_train", "--no-progress"]
    for key in ("train_data", "model", "batch_size", "train_num_samples", "epochs", "lr", "warmup", "precision",
                "workers", "shuffle_buffer", "logs", "name", "seed", "save_every_n_steps", "keep_checkpoints",
                "device"):
        cmd += [f"--{key.replace('_', '-')}", str(args[key])]
    return cmd + list(extra)


def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(base_args, tmp_path, child_env):
    # 80 samples / batch 16 = 5 steps per epoch, 2 epochs; 2 data workers, so resuming at step 3 restarts
    # mid-epoch with the worker streams rotated.
    straight = subprocess.run(cli(base_args, "straight"), env=child_env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "logs" / "killed"
    proc = subprocess.Popen(cli(base_args, "killed"), env=child_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not checkpoint_path(run_dir, 3).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint_path(run_dir, 3).exists()
    for step, path in list_checkpoints(run_dir):  # whatever it got to, continue from step 3
        if step > 3:
            path.unlink()

    resumed = subprocess.run(cli(base_args, "killed", "--resume", "latest"), env=child_env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 3" in resumed.stderr and "not bit-identical" not in resumed.stderr

    a = read_checkpoint(checkpoint_path(tmp_path / "logs" / "straight", 10))
    b = read_checkpoint(checkpoint_path(run_dir, 10))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
