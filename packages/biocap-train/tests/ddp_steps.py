"""Helper for test_distributed.py: a few training steps on fixed global batches.

Run under ``torchrun --nproc_per_node=2`` each rank takes its half of every
global batch; run as one process it takes the whole batch. Writes the text
type and loss of each step per rank, and rank 0's final parameters.
"""

import json
import sys
from pathlib import Path

import torch
from biocap_train import TrainConfig, distributed
from biocap_train.schedule import text_type_for_step
from biocap_train.trainer import Trainer

GLOBAL_BATCH, STEPS = 8, 6


def main(model: str, out: Path) -> None:
    info = distributed.init("cpu")
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
        text_type = text_type_for_step(step, cfg.seed, cfg.text_type, cfg.caption_share)
        result = trainer.train_step(step, [{"image": images[rows], "text": texts[rows], "text_type": text_type}])
        log.append({"text_type": result["text_type"], "loss": result["loss"]})
    tag = f"world{info.world_size}"
    (out / f"{tag}-rank{info.rank}.json").write_text(json.dumps(log))
    if info.is_main:
        torch.save(trainer.model.state_dict(), out / f"{tag}.pt")
    distributed.cleanup(info)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
