"""End to end with biocap-train: on the toy tree of life, training clearly beats no training on all
three tasks.

biocap-eval does not depend on biocap-train; the workspace's test environment has both.
"""

from __future__ import annotations

import json

import pytest
import torch

from biocap_core.checkpoints import load_model
from biocap_core.model import build_model
from biocap_core.toy import ToyConfig, generate
from biocap_eval.api import evaluate

biocap_train = pytest.importorskip("biocap_train")
pytestmark = pytest.mark.slow

TASKS = ["toy-zeroshot", "toy-inquire", "toy-retrieval"]
MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def r10(result) -> float:
    return (result.metrics["i2t_R@10"] + result.metrics["t2i_R@10"]) / 2


def learnable_ap(result) -> float:
    """AP over the toy queries that both kinds of training text teach: colours, patterns and body
    plans (Appearance, some with a life stage) and species names (Species). Pose (Behavior) and
    setting (Context) are stated only by the captions, on a sixth of the steps, so this check
    leaves them out."""
    return (result.metrics["ap_Appearance"] + result.metrics["ap_Species"]) / 2


def test_a_trained_model_beats_the_untrained_one_on_every_task(tmp_path):
    toy = tmp_path / "toy"
    generate(
        toy,
        ToyConfig(
            species=12,
            images_per_species=24,
            val_per_species=1,
            eval_per_species=4,
            inquire_queries=8,
            inquire_candidates=40,
            image_size=32,
            shard_size=64,
        ),
    )
    config = tmp_path / "model.json"
    config.write_text(json.dumps(MODEL))
    run = biocap_train.train(
        biocap_train.TrainConfig(
            train_data="::".join(str(p) for p in sorted((toy / "train").glob("shard-*.tar"))),
            model=str(config),
            batch_size=32,
            steps=160,
            lr=1e-3,
            warmup=10,
            precision="fp32",
            workers=0,
            shuffle_buffer=256,
            logs=str(tmp_path / "logs"),
            name="gain",
            save_frequency=0,
            zeroshot_frequency=1000,
            progress=False,
            device="cpu",
            seed=0,
        )
    )
    trained = evaluate(load_model(str(config), str(run.checkpoint)), TASKS, toy)
    torch.manual_seed(0)
    untrained = evaluate(build_model(MODEL), TASKS, toy)

    assert trained["toy-zeroshot"].metrics["top1"] >= untrained["toy-zeroshot"].metrics["top1"] + 10
    assert trained["toy-zeroshot"].metrics["top5"] >= untrained["toy-zeroshot"].metrics["top5"] + 20
    assert learnable_ap(trained["toy-inquire"]) >= learnable_ap(untrained["toy-inquire"]) + 10
    assert trained["toy-inquire"].metrics["ap"] > untrained["toy-inquire"].metrics["ap"]
    assert r10(trained["toy-retrieval"]) >= r10(untrained["toy-retrieval"]) + 15
