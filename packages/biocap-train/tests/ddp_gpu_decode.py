"""Helper for test_distributed.py: ``--gpu-decode``'s data path (the device decode run on the CPU)
under ``torchrun --nproc_per_node=2``. Writes each rank's micro-batch sizes and device-failure count."""

import json
import sys
from pathlib import Path

from biocap_core.model import build_model
from biocap_train import TrainConfig, distributed
from biocap_train.data import TrainBatches, plan_run

STEPS = 6


def main(train_data: str, model: str, out: Path) -> None:
    info = distributed.init("cpu")
    cfg = TrainConfig(train_data=train_data, batch_size=8, train_num_samples=128, workers=0, seed=3,
                      shuffle_buffer=50, precision="fp32", text_type="sci", gpu_decode=True)
    data = TrainBatches(cfg, plan_run(cfg, info), info, build_model(model), None, None, say=print)
    sizes = [[(len(b["image"]), len(b["text"]), len(b["keys"])) for b in micro] for micro in data.steps(0, STEPS)]
    failed = data.problems().counts["corrupt_image"]  # every rank's, gathered
    (out / f"rank{info.rank}.json").write_text(json.dumps({"sizes": sizes, "failed": failed}))
    distributed.cleanup(info)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
