"""torchrun with 2 CPU processes (gloo): ranks agree on text types, and DDP with local loss and
gathered features computes what one process computes on the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from biocap_core.checkpoints import read_checkpoint

HERE = Path(__file__).parent


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def test_two_ranks_equal_one_process_on_the_same_global_batch(tiny_model, tmp_path, child_env):
    script = str(HERE / "ddp_steps.py")
    single = subprocess.run([sys.executable, script, tiny_model, str(tmp_path)], env=child_env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(torchrun(script, tiny_model, str(tmp_path)), env=child_env, capture_output=True,
                         text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    logs = {name: json.loads((tmp_path / f"{name}.json").read_text())
            for name in ("world1-rank0", "world2-rank0", "world2-rank1")}
    types = {name: [s["text_type"] for s in log] for name, log in logs.items()}
    assert types["world2-rank0"] == types["world2-rank1"] == types["world1-rank0"]
    assert "caption" in types["world1-rank0"] and set(types["world1-rank0"]) - {"caption"}
    for a, b in zip(logs["world1-rank0"], logs["world2-rank0"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4

    one, two = torch.load(tmp_path / "world1.pt"), torch.load(tmp_path / "world2.pt")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-5, rtol=1e-4), key


def test_the_cli_under_torchrun_splits_data_and_checkpoints_every_rank_position(toy_train, tiny_model, tmp_path,
                                                                                child_env):
    cmd = torchrun("-m", "biocap_train", "--train-data", toy_train, "--model", tiny_model, "--batch-size", "8",
                   "--steps", "4", "--log-every-n-steps", "1", "--workers", "1", "--precision", "fp32", "--warmup", "1", "--lr", "1e-3",
                   "--shuffle-buffer", "32", "--logs-dir", str(tmp_path), "--name", "ddp", "--device", "cpu",
                   "--no-progress")
    run = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("checkpoint: ") == 1  # rank 0 reports
    ckpt = read_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_00000004.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["data_state"]) == 2
    assert all(state["microbatches"] == 4 for state in ckpt["data_state"])
    keys = [line for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(keys) == 4


def test_gpu_decode_ranks_trim_to_the_smallest_batch_when_a_jpeg_fails_on_one_device(
        toy, tiny_model, tmp_path, child_env, rewrite_shards, corrupt_inside):
    """ClipLoss gathers equal-sized batches: a sample dropped on one rank's device shrinks every rank's."""
    from biocap_core.shards import iter_samples

    urls = sorted(str(p) for p in (toy / "train").glob("shard-*.tar"))
    bad_keys = {s["__key__"] for s in list(iter_samples(urls[:3]))[::3]}  # in half of the shards only
    shards = rewrite_shards(urls, tmp_path / "shards", lambda s: {**s, "jpg": corrupt_inside(s["jpg"])}
                            if s["__key__"] in bad_keys else s)
    run = subprocess.run(torchrun(str(HERE / "ddp_gpu_decode.py"), "::".join(shards), tiny_model, str(tmp_path)),
                         env=child_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sizes"] == ranks[1]["sizes"]
    sizes = [n for micro in ranks[0]["sizes"] for n in micro]
    assert all(image == text == keys for image, text, keys in sizes)
    assert min(image for image, _, _ in sizes) < 8 and ranks[0]["failed"] == ranks[1]["failed"] > 0


def test_slurm_variables_give_the_ranks_without_torchrun(monkeypatch):
    from biocap_train.distributed import _env_ranks

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    with pytest.raises(RuntimeError, match=r"8 tasks but \['MASTER_ADDR', 'MASTER_PORT'\] unset"):
        _env_ranks()
    monkeypatch.setenv("MASTER_ADDR", "node001")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert _env_ranks() == (5, 8, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun inside an allocation wins
    monkeypatch.setenv("RANK", "1")
    assert _env_ranks() == (1, 2, 0)
