"""torchrun with 2 CPU processes (gloo): ranks agree on text types, DDP with local loss and gathered
features computes what one process computes on the same global batch, the CLI splits data and
checkpoints every rank's position, --gpu-decode's ranks trim to one batch size, and a run that would
overwrite checkpoints stops on every rank.

The four torchrun jobs share one launch (ddp_jobs.py): a launch starts three interpreters that
import torch and OpenCLIP, which costs more CPU than the jobs themselves."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from biocap_core.checkpoints import read_checkpoint

HERE = Path(__file__).parent
# the tests of this module share one torchrun launch: under pytest-xdist they must share a worker too
pytestmark = pytest.mark.xdist_group("biocap-train-torchrun")


def ddp_jobs():
    """The helper module, for the single-process reference run in this process."""
    spec = importlib.util.spec_from_file_location("ddp_jobs", HERE / "ddp_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torchrun_job(toy, toy_train, tiny_model, tmp_path_factory, child_env, rewrite_shards, corrupt_inside):
    """One ``torchrun --nproc_per_node=2 ddp_jobs.py``: the fixed-batch steps, the --gpu-decode data path
    on shards with a corrupt JPEG in every third sample of half of the shards, and the command line
    (4 steps of batch 8, one data worker per rank). Returns the finished process and its output folder."""
    from biocap_core.shards import iter_samples

    out = tmp_path_factory.mktemp("torchrun")
    urls = sorted(str(p) for p in (toy / "train").glob("shard-*.tar"))
    bad_keys = {s["__key__"] for s in list(iter_samples(urls[:3]))[::3]}  # in half of the shards only
    shards = rewrite_shards(urls, out / "shards", lambda s: {**s, "jpg": corrupt_inside(s["jpg"])}
                            if s["__key__"] in bad_keys else s)
    cli = ["--train-data", toy_train, "--model", tiny_model, "--batch-size", "8", "--steps", "4",
           "--log-every-n-steps", "1", "--workers", "1", "--precision", "fp32", "--warmup", "1", "--lr", "1e-3",
           "--shuffle-buffer", "32", "--logs-dir", str(out), "--name", "ddp", "--device", "cpu", "--no-progress"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(HERE / "ddp_jobs.py"), str(out), tiny_model, "::".join(shards), *cli],
                         env=child_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run, out


def test_two_ranks_equal_one_process_on_the_same_global_batch(torchrun_job, tiny_model, tmp_path):
    from biocap_train.distributed import DistInfo

    _, out = torchrun_job
    ddp_jobs().steps(DistInfo(), tiny_model, tmp_path)
    logs = {"world1-rank0": json.loads((tmp_path / "world1-rank0.json").read_text()),
            **{name: json.loads((out / f"{name}.json").read_text()) for name in ("world2-rank0", "world2-rank1")}}
    types = {name: [s["text_type"] for s in log] for name, log in logs.items()}
    assert types["world2-rank0"] == types["world2-rank1"] == types["world1-rank0"]
    assert "caption" in types["world1-rank0"] and set(types["world1-rank0"]) - {"caption"}
    for a, b in zip(logs["world1-rank0"], logs["world2-rank0"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4

    one, two = torch.load(tmp_path / "world1.pt"), torch.load(out / "world2.pt")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-5, rtol=1e-4), key


def test_the_cli_under_torchrun_splits_data_and_checkpoints_every_rank_position(torchrun_job):
    run, out = torchrun_job
    assert run.stdout.count("checkpoint: ") == 1  # rank 0 reports
    ckpt = read_checkpoint(out / "ddp" / "checkpoints" / "step_00000004.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["data_state"]) == 2
    assert all(state["microbatches"] == 4 for state in ckpt["data_state"])
    keys = [line for line in (out / "ddp" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(keys) == 4


def test_gpu_decode_ranks_trim_to_the_smallest_batch_when_a_jpeg_fails_on_one_device(torchrun_job):
    """ClipLoss gathers equal-sized batches: a sample dropped on one rank's device shrinks every rank's."""
    _, out = torchrun_job
    ranks = [json.loads((out / f"gpu-decode-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sizes"] == ranks[1]["sizes"]
    sizes = [n for micro in ranks[0]["sizes"] for n in micro]
    assert all(image == text == keys for image, text, keys in sizes)
    assert min(image for image, _, _ in sizes) < 8 and ranks[0]["failed"] == ranks[1]["failed"] > 0


def test_a_run_one_rank_finds_wrong_stops_every_rank(torchrun_job):
    """Rank 0 finds checkpoints of an earlier run (a fresh run must not overwrite them), the first
    rank of the node a caption table with duplicate uuids: the other rank stops too, with the same
    error, instead of waiting for it forever."""
    _, out = torchrun_job
    outcomes = [json.loads((out / f"refusals-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0]["existing"].startswith("FileExistsError: ")
    assert "existing already has checkpoints; pass --resume latest" in outcomes[0]["existing"]
    assert outcomes[0]["captions"].startswith("SchemaError: ")
    assert "1 duplicate uuid(s)" in outcomes[0]["captions"]


def test_an_error_other_ranks_could_not_unpickle_reaches_them_as_its_type_and_message(tmp_path):
    from biocap_core.errors import SchemaError, UnwritableFolder
    from biocap_train.distributed import _sendable

    plain = SchemaError("bad table")
    assert _sendable(plain) is plain and _sendable(None) is None
    odd = UnwritableFolder(tmp_path, PermissionError(13, "Permission denied"), "not writable")
    sent = pickle.loads(pickle.dumps(_sendable(odd)))
    assert isinstance(sent, RuntimeError) and str(sent).startswith("UnwritableFolder: [Errno 13]")


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
