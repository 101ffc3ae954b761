"""One optimisation step: which parameters move, scale clamping, accumulation, divergence,
outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from biocap_core.checkpoints import load_model, read_checkpoint
from biocap_train import TrainConfig, TrainingDiverged, train
from biocap_train.batches import Batch
from biocap_train.distributed import DistInfo
from biocap_train.loss import HeadLosses
from biocap_train.schedule import TextSchedule
from biocap_train.trainer import Trainer
from biocap_train.validation import validation_loss


def make_trainer(tiny_model, **kw) -> Trainer:
    args = dict(model=tiny_model, precision="fp32", lr=1e-2, warmup=1, wd=0.1, progress=False)
    args.update(kw)
    return Trainer(TrainConfig(**args), DistInfo(), total_steps=10)


def batch(trainer: Trainer, n=8, seed=0) -> Batch:
    """A micro-batch of step 0, carrying what the data stream would draw for that step."""
    g = torch.Generator().manual_seed(seed)
    tok = trainer.model.tokenizer()
    cfg = trainer.cfg
    step_text = TextSchedule(cfg.seed, cfg.text_type, cfg.caption_share, cfg.joint_loss).at(0)
    captions = tok([f"a round body with {i} marks" for i in range(n)]) if step_text.joint else None
    return Batch(
        image=torch.randn(n, 3, *trainer.model.image_size, generator=g),
        text=tok([f"a photo of species {seed}-{i}." for i in range(n)]),
        caption_text=captions,
        step_text=step_text,
    )


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


@pytest.mark.parametrize(
    "text_type,trained,frozen",
    [
        ("sci", ("visual.proj", "logit_scale"), ("visual.caption_proj", "logit_scale_caption")),
        ("caption", ("visual.caption_proj", "logit_scale_caption"), ("visual.proj", "logit_scale")),
    ],
)
def test_a_step_trains_only_its_head(tiny_model, text_type, trained, frozen):
    trainer = make_trainer(tiny_model, text_type=text_type)
    before = params(trainer)
    out = trainer.train_step(0, [batch(trainer)])
    assert out["text_type"] == text_type and math.isfinite(out["loss"])
    after = params(trainer)
    for name in trained + ("transformer.resblocks.0.mlp.c_fc.weight", "visual.conv1.weight"):
        assert not torch.equal(before[name], after[name]), name
    for name in frozen:  # out of the graph: no gradient, no Adam update, no weight decay
        assert torch.equal(before[name], after[name]), name
        assert dict(trainer.model.named_parameters())[name].grad is None


def test_joint_loss_trains_both_heads(tiny_model):
    trainer = make_trainer(tiny_model, joint_loss=True, caption_loss_weight=0.5)
    before = params(trainer)
    out = trainer.train_step(0, [batch(trainer)])
    after = params(trainer)
    assert {"loss_tax", "loss_caption"} <= set(out)
    assert out["loss"] == pytest.approx(out["loss_tax"] + 0.5 * out["loss_caption"], rel=1e-5)
    for name in ("visual.proj", "visual.caption_proj", "logit_scale", "logit_scale_caption"):
        assert not torch.equal(before[name], after[name]), name


@pytest.mark.parametrize("joint", [False, True])
def test_a_shared_caption_head_trains_the_taxonomic_projector(tiny_model, joint):
    """``--caption-head shared``: caption steps (and the joint loss's captions) go through
    ``visual.proj`` and ``logit_scale``; the caption projector and temperature stay bit-identical.
    """
    kind = {"joint_loss": True} if joint else {"text_type": "caption"}
    trainer = make_trainer(tiny_model, caption_head="shared", **kind)
    before = params(trainer)
    out = trainer.train_step(0, [batch(trainer)])
    after = params(trainer)
    assert math.isfinite(out["loss"]) and math.isfinite(out["loss_caption"])
    for name in ("visual.proj", "logit_scale", "visual.conv1.weight"):
        assert not torch.equal(before[name], after[name]), name
    for name in ("visual.caption_proj", "logit_scale_caption"):
        assert torch.equal(before[name], after[name]), name
        assert dict(trainer.model.named_parameters())[name].grad is None
    # the caption loss is the CLIP loss of the taxonomic projector's features against captions
    separate = make_trainer(tiny_model, **kind)
    with torch.no_grad():
        separate.model.visual.caption_proj.copy_(before["visual.proj"])
        separate.model.logit_scale_caption.copy_(before["logit_scale"])
    assert separate.train_step(0, [batch(separate)])["loss_caption"] == pytest.approx(
        out["loss_caption"], rel=1e-5
    )


def test_a_shared_caption_head_validates_captions_through_the_taxonomic_projector(base_args, toy):
    cfg = TrainConfig(**base_args, val_data=str(toy / "val" / "shard-000000.tar"))
    model, cpu = Trainer(cfg, DistInfo(), total_steps=1).model, torch.device("cpu")
    shared, _ = validation_loss(model, dataclasses.replace(cfg, caption_head="shared"), None, cpu)
    separate, _ = validation_loss(model, cfg, None, cpu)
    assert shared["loss_tax"] == pytest.approx(separate["loss_tax"], rel=1e-6)
    assert shared["loss_caption"] != pytest.approx(separate["loss_caption"], rel=1e-3)
    with torch.no_grad():  # a separate caption head equal to the taxonomic one: the shared loss
        model.visual.caption_proj.copy_(model.visual.proj)
        model.logit_scale_caption.copy_(model.logit_scale)
    aligned, _ = validation_loss(model, cfg, None, cpu)
    assert shared["loss_caption"] == pytest.approx(aligned["loss_caption"], rel=1e-5)


def test_logit_scales_are_clamped_to_ln_100(tiny_model):
    trainer = make_trainer(tiny_model, text_type="caption", lr=0.5, warmup=1)
    with torch.no_grad():
        trainer.model.logit_scale_caption.fill_(7.0)
        trainer.model.logit_scale.fill_(-1.0)
    trainer.train_step(0, [batch(trainer)])
    assert trainer.model.logit_scale_caption.item() <= math.log(100) + 1e-6
    assert trainer.model.logit_scale.item() == 0.0


@pytest.mark.parametrize("option", [{"accum_freq": 2}, {"grad_checkpointing": True}])
def test_accumulation_and_checkpointing_give_the_plain_step(tiny_model, option):
    """Accumulating two halves (cached features as negatives) equals one step on the whole batch."""
    plain = make_trainer(tiny_model, text_type="taxon")
    whole = batch(plain, n=12)
    plain.train_step(0, [whole])
    other = make_trainer(tiny_model, text_type="taxon", **option)
    if option.get("accum_freq") == 2:
        halves = [
            dataclasses.replace(whole, image=whole.image[part], text=whole.text[part])
            for part in (slice(0, 6), slice(6, 12))
        ]
        other.train_step(0, halves)
    else:
        other.train_step(0, [whole])
    # compare gradients: Adam's first step is ~lr * sign(grad), which would magnify float noise
    for (name, a), b in zip(plain.model.named_parameters(), other.model.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(base_args, monkeypatch):
    calls = {"n": 0}
    real = HeadLosses.__call__

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        losses = real(self, *args, **kwargs)
        if calls["n"] > 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(HeadLosses, "__call__", poisoned)
    cfg = TrainConfig(**{**base_args, "save_every_n_steps": 2, "keep_checkpoints": 0})
    with pytest.raises(
        TrainingDiverged, match=r"loss is nan at step 3 .*last good checkpoint: .*step_00000002\.pt"
    ):
        train(cfg)
    ckpts = sorted(p.name for p in (cfg.run_dir / "checkpoints").glob("*.pt"))
    assert ckpts == ["step_00000002.pt"]
    state = read_checkpoint(cfg.run_dir / "checkpoints" / ckpts[0])["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    last = json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "diverged"


def test_a_run_logs_validates_and_keeps_the_last_checkpoints(base_args, toy):
    cfg = TrainConfig(
        **{
            **base_args,
            "val_data": str(toy / "val" / "shard-000000.tar"),
            "save_every_n_steps": 2,
            "keep_checkpoints": 2,
            "zeroshot_data": str(toy / "zeroshot" / "metadata.csv"),
            "zeroshot_label_type": "asis",
            "zeroshot_templates": 2,
        }
    )
    result = train(cfg)
    assert result.step == 10 and result.checkpoint.name == "step_00000010.pt"
    assert sorted(p.name for p in (cfg.run_dir / "checkpoints").iterdir()) == [
        "step_00000008.pt",
        "step_00000010.pt",
    ]
    records = [
        json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    kinds = {r["kind"] for r in records}
    assert {"train", "val", "zeroshot", "data", "checkpoint"} <= kinds
    trains = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in trains] == list(range(1, 11))
    for key in (
        "loss",
        "lr",
        "text_type",
        "scale_tax",
        "scale_caption",
        "share_tax",
        "share_caption",
        "samples_per_s",
        "data_wait_s",
    ):
        assert key in trains[-1], key
    assert trains[-1]["share_tax"] + trains[-1]["share_caption"] == pytest.approx(1.0)
    assert max(r["scale_tax"] for r in trains) <= 100.0 + 1e-4
    val = [r for r in records if r["kind"] == "val"]
    assert len(val) == 2 and all(
        v["loss_tax"] > 0 and v["loss_caption"] > 0 and v["samples"] == 32 for v in val
    )
    assert set(result.zeroshot) == {"before", "after"} and result.chance == 1 / 16
    ckpt = read_checkpoint(result.checkpoint)  # weights_only: plain containers only
    assert ckpt["step"] == 10 and ckpt["config"]["batch_size"] == 16 and "optimizer" in ckpt
    model = load_model(ckpt["model_cfg"], result.checkpoint)
    assert torch.equal(model.visual.caption_proj, ckpt["state_dict"]["visual.caption_proj"])


def test_bad_validation_samples_are_counted_and_reported(
    base_args, toy, tmp_path, rewrite_shards, capfd, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "1000")  # one console line per message
    val = str(toy / "val" / "shard-000000.tar")
    bad = rewrite_shards(
        [val],
        tmp_path / "val",
        lambda s: (
            {**s, "jpg": b"\xff\xd8 not a jpeg"} if s["__key__"].endswith(("0", "1", "2")) else s
        ),
    )
    cfg = TrainConfig(**{**base_args, "val_data": bad[0], "steps": 5})
    result = train(cfg)
    records = [
        json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    (val_record,) = [r for r in records if r["kind"] == "val"]
    skipped = val_record["skipped"]["corrupt_image"]
    assert skipped > 0 and val_record["samples"] + skipped == 32
    assert (
        f"epoch 0 validation: skipped {skipped} bad input(s): undecodable image: {skipped}"
        in capfd.readouterr().err
    )
    assert result.step == 5


def test_an_existing_run_needs_resume_or_a_new_name(base_args):
    train(TrainConfig(**{**base_args, "steps": 2}))
    with pytest.raises(FileExistsError, match="--resume latest"):
        train(TrainConfig(**{**base_args, "steps": 2}))


def test_train_leaves_the_callers_config_as_given(base_args):
    cfg = TrainConfig(**{**base_args, "name": None, "steps": 1, "save_frequency": 0})
    given = cfg.to_dict()
    result = train(cfg)
    assert cfg.to_dict() == given and cfg.name is None
    assert result.run_dir.parent == Path(base_args["logs"]) and "-model_" in result.run_dir.name


@pytest.mark.parametrize("precision", ["amp", "amp_bf16", "bf16"])
def test_mixed_and_low_precision_steps_train(tiny_model, precision):
    trainer = make_trainer(tiny_model, precision=precision, text_type="taxon")
    before = params(trainer)
    losses = [
        trainer.train_step(step, [batch(trainer, seed=step % 2)])["loss"] for step in range(3)
    ]
    after = params(trainer)
    assert all(math.isfinite(x) for x in losses)
    assert not torch.equal(before["visual.proj"], after["visual.proj"])
    assert 0 <= trainer.model.logit_scale.item() <= math.log(100)


@pytest.mark.slow
def test_torchcompile_run_matches_eager_and_its_checkpoint_loads(base_args):
    """--torchcompile (inductor; about 40 s of compilation on 2 cores) gives the eager run's losses,
    and its checkpoint has the plain parameter names that biocap-core loads."""
    runs = {}
    for compiled in (False, True):
        args = {
            **base_args,
            "name": f"compile-{compiled}",
            "steps": 3,
            "text_type": "taxon",
            "torchcompile": compiled,
        }
        result = train(TrainConfig(**args))
        losses = [
            json.loads(line)["loss"]
            for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
            if '"kind": "train"' in line
        ]
        runs[compiled] = (losses, result.checkpoint)
    assert len(runs[True][0]) == 3
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-3)
    ckpt = read_checkpoint(runs[True][1])
    assert ckpt["config"]["torchcompile"] is True
    eager = read_checkpoint(runs[False][1])["state_dict"]
    assert ckpt["state_dict"].keys() == eager.keys()
    model = load_model(ckpt["model_cfg"], runs[True][1])
    assert torch.equal(model.visual.proj, ckpt["state_dict"]["visual.proj"])


def test_validation_with_gpu_decode_gives_the_cpu_decodes_loss_and_counts_device_failures(
    base_args, toy, tmp_path, rewrite_shards, corrupt_inside
):
    """The device decode runs on the CPU here (require_cuda is train()'s check, not
    validation's)."""
    val = str(toy / "val" / "shard-000000.tar")
    model = Trainer(TrainConfig(**base_args), DistInfo(), total_steps=1).model
    results = {}
    for gpu_decode in (False, True):
        cfg = TrainConfig(**{**base_args, "val_data": val, "gpu_decode": gpu_decode})
        results[gpu_decode] = validation_loss(model, cfg, None, torch.device("cpu"))
    (cpu, cpu_problems), (device, device_problems) = results[False], results[True]
    assert (
        device["samples"] == cpu["samples"] == 32
        and not cpu_problems.counts
        and not device_problems.counts
    )
    assert device["loss_tax"] == pytest.approx(cpu["loss_tax"], rel=1e-3)
    assert device["loss_caption"] == pytest.approx(cpu["loss_caption"], rel=1e-3)
    bad = rewrite_shards(
        [val],
        tmp_path / "val",
        lambda s: (
            {**s, "jpg": corrupt_inside(s["jpg"])} if s["__key__"].endswith(("0", "1", "2")) else s
        ),
    )
    cfg = TrainConfig(**{**base_args, "val_data": bad[0], "gpu_decode": True})
    result, problems = validation_loss(model, cfg, None, torch.device("cpu"))
    skipped = problems.counts["corrupt_image"]
    assert skipped > 0 and result["samples"] + skipped == 32
    assert "(on the device)" in problems.examples["corrupt_image"][0]


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="--gpu-decode needs a CUDA device (nvJPEG)"
)
def test_a_gpu_decode_run_trains_on_cuda(base_args):
    cfg = TrainConfig(
        **{**base_args, "device": "cuda", "gpu_decode": True, "steps": 2, "workers": 1}
    )
    result = train(cfg)
    assert result.step == 2 and result.checkpoint.is_file()
    losses = [
        json.loads(line)["loss"]
        for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert read_checkpoint(result.checkpoint)["config"]["gpu_decode"] is True
