"""Helper for test_distributed.py: four jobs in one ``torchrun --nproc_per_node=2`` launch, because
each launch starts three interpreters that import torch and OpenCLIP, which costs more CPU than the
jobs.

``python ddp_jobs.py OUT MODEL SHARDS [CLI ARGS...]``, under torchrun:

1. :func:`steps`: a few training steps on fixed global batches, each rank taking its half of every
   global batch (run as one process by the test, it takes the whole batch). Writes the text type and
   loss of each step per rank, and rank 0's final parameters.
2. :func:`gpu_decode`: ``--gpu-decode``'s data path (the device decode run on the CPU) on SHARDS. Writes
   each rank's micro-batch sizes and device-failure count.
3. :func:`refusals`: runs that one rank finds wrong before training. Writes each rank's errors.
4. The ``biocap-train`` command line with CLI ARGS, as ``torchrun -m biocap_train CLI ARGS`` runs
   it.
"""

import dataclasses
import json
import signal
import sys
from pathlib import Path

import polars as pl
import torch
from biocap_core.model import build_model
from biocap_train import TrainConfig, distributed
from biocap_train.batches import Batch
from biocap_train.checkpointing import checkpoint_path
from biocap_train.cli import main as biocap_train_cli
from biocap_train.distributed import DistInfo
from biocap_train.run_plan import plan_run
from biocap_train.schedule import TextSchedule
from biocap_train.train_batches import TrainBatches
from biocap_train.trainer import Trainer

GLOBAL_BATCH, STEPS = 8, 6
DECODE_STEPS = 6


def steps(info: DistInfo, model: str, out: Path) -> None:
    # eps 1e-3: gradients that are float noise around 0 (e.g. attention key biases) must not be
    # turned into full-size Adam steps, or the comparison would measure noise, not the algorithm
    cfg = TrainConfig(model=model, precision="fp32", lr=1e-3, warmup=2, wd=0.1, eps=1e-3, caption_share=0.5,
                      seed=4, progress=False)
    trainer = Trainer(cfg, info, total_steps=STEPS)
    tok = trainer.model.tokenizer()
    per_rank = GLOBAL_BATCH // info.world_size
    rows = slice(info.rank * per_rank, (info.rank + 1) * per_rank)
    log = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        images = torch.randn(GLOBAL_BATCH, 3, *trainer.model.image_size, generator=g)
        texts = tok([f"a photo of species {step}-{i} with {i % 3} marks." for i in range(GLOBAL_BATCH)])
        step_text = TextSchedule(cfg.seed, cfg.text_type, cfg.caption_share).at(step)
        micro = [Batch(image=images[rows], text=texts[rows], step_text=step_text)]
        result = trainer.train_step(step, micro)
        log.append({"text_type": result["text_type"], "loss": result["loss"]})
    tag = f"world{info.world_size}"
    (out / f"{tag}-rank{info.rank}.json").write_text(json.dumps(log))
    if info.is_main:
        torch.save(trainer.model.state_dict(), out / f"{tag}.pt")


def gpu_decode(info: DistInfo, train_data: str, model: str, out: Path) -> None:
    cfg = TrainConfig(train_data=train_data, batch_size=8, train_num_samples=128, workers=0, seed=3,
                      shuffle_buffer=50, precision="fp32", text_type="sci", gpu_decode=True)
    data = TrainBatches(cfg, plan_run(cfg, info), info, build_model(model), None, None, say=print)
    sizes = [[(len(b.image), len(b.text), len(b.keys)) for b in micro]
             for micro in data.steps(0, DECODE_STEPS)]
    failed = data.problems().counts["corrupt_image"]  # every rank's, gathered
    (out / f"gpu-decode-rank{info.rank}.json").write_text(json.dumps({"sizes": sizes, "failed": failed}))


def refusals(info: DistInfo, train_data: str, model: str, out: Path) -> None:
    """Runs that rank 0 (or each node's first rank) finds wrong: every rank must stop with the
    error, none waiting for the others at a collective. Writes each rank's error per case."""
    cfg = TrainConfig(train_data=train_data, model=model, batch_size=8, train_num_samples=64,
                      steps=1, workers=0, precision="fp32", logs=str(out), progress=False)
    cases = {"existing": dataclasses.replace(cfg, name="existing"),
             "captions": dataclasses.replace(cfg, name="captions", text_type="caption",
                                             captions=str(out / "duplicates.parquet"))}
    if info.is_main:
        checkpoint_path(cases["existing"].run_dir, 1).parent.mkdir(parents=True)
        checkpoint_path(cases["existing"].run_dir, 1).write_bytes(b"an earlier run's checkpoint")
        pl.DataFrame({"uuid": ["a", "a"], "caption": ["x", "y"]}).write_parquet(
            out / "duplicates.parquet")
    distributed.barrier(info)
    outcomes = {}
    for case, case_cfg in cases.items():
        signal.alarm(120)  # a rank left waiting at a collective ends the launch, failed
        try:
            Trainer(case_cfg, info, total_steps=1).fit(plan_run(case_cfg, info))
            outcomes[case] = "trained"
        except Exception as exc:
            outcomes[case] = f"{type(exc).__name__}: {exc}"
        signal.alarm(0)
    (out / f"refusals-rank{info.rank}.json").write_text(json.dumps(outcomes))


def main(out: Path, model: str, shards: str, cli_args: list[str]) -> None:
    info = distributed.init("cpu")
    steps(info, model, out)
    gpu_decode(info, shards, model, out)
    refusals(info, shards, model, out)
    biocap_train_cli(cli_args)  # joins the process group above and leaves it when done


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:])
