"""The BioCAP training loop.

One optimisation step trains one head, chosen by the step's text type
(:mod:`biocap_train.schedule`): a caption step computes only the caption head
and ``logit_scale_caption``, a taxonomic step only ``visual.proj`` and
``logit_scale``, so the other head's parameters stay out of the graph and
AdamW leaves them untouched (grad None), as in the original. Under DDP this
varying graph needs ``find_unused_parameters=True``; with ``--joint-loss``
every parameter is used every step and it is off. The loss is OpenCLIP's
``ClipLoss`` (``--local-loss --gather-with-grad`` by default, which gives the
gradient of the single-process loss on the global batch).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from biocap_core.checkpoints import load_model, load_weights, read_checkpoint
from biocap_core.errors import BioCAPError, CheckpointError, UnwritableFolder
from biocap_core.fileio import atomic_write, writable_folder
from biocap_core.model import build_model
from biocap_core.precision import autocast, input_dtype
from biocap_core.preprocess import image_transform, short_side
from biocap_core.shards import count_samples, expand_sources
from biocap_core.taxonomy import TEMPLATES
from biocap_core.zeroshot import (
    ClassificationSet,
    classifier_weights,
    encode_images,
    topk_accuracy,
)
from open_clip import ClipLoss
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from biocap_train import distributed
from biocap_train.captions import CaptionIndex, index_dir_for
from biocap_train.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
    save_checkpoint,
    set_aside,
)
from biocap_train.config import TrainConfig
from biocap_train.data import DataCounts, StreamSpec, TrainStream, ValStream, check_data, loader
from biocap_train.distributed import DistInfo
from biocap_train.optim import make_optimizer
from biocap_train.reporting import MetricsLog, ProgressDisplay
from biocap_train.schedule import head_of, learning_rate, text_type_for_step

#: Config fields that fix the data stream; a resume that changes one cannot continue it exactly.
STREAM_FIELDS = ("train_data", "train_data_upsampling_factors", "dataset_resampled", "train_num_samples",
                 "batch_size", "accum_freq", "workers", "seed", "shuffle_buffer", "text_type",
                 "caption_share", "joint_loss", "captions")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


@dataclass
class RunPlan:
    """How many samples, steps and data streams a run has."""

    urls: list[str]
    weights: list[float] | None
    samples_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_streams: int


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path | None
    step: int
    zeroshot: dict[str, float] = field(default_factory=dict)
    chance: float | None = None
    data_problems: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rank: int = 0
    #: --resume found the run already at its last step: nothing was trained or written.
    finished: bool = False


def plan_run(cfg: TrainConfig, info: DistInfo) -> RunPlan:
    """Shards, epoch size and step counts; fails before training if the data cannot feed every reader."""
    urls, weights = expand_sources(cfg.train_data, cfg.train_data_upsampling_factors)
    streams = max(1, cfg.workers)
    if not cfg.dataset_resampled and len(urls) < info.world_size * streams:
        raise ValueError(
            f"--train-data has {len(urls)} shard(s) but {info.world_size} rank(s) x {streams} worker stream(s) "
            f"= {info.world_size * streams} readers each need at least one; use --dataset-resampled "
            f"(shards drawn with replacement), fewer --workers, or split the data into more shards"
        )
    check_data(cfg)
    if cfg.train_num_samples is not None:
        samples = cfg.train_num_samples
    else:
        try:
            samples = count_samples(urls)
        except FileNotFoundError as exc:
            raise ValueError(f"{exc}; or pass --train-num-samples") from exc
    global_batch = cfg.batch_size * cfg.accum_freq * info.world_size
    steps_per_epoch = max(1, math.ceil(samples / global_batch))
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    return RunPlan(urls, weights, samples, steps_per_epoch, total, streams)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder and check it takes files, before the model is built: a --logs path under a
    regular file or in an unwritable place then fails at once, naming the path, not as a traceback later."""
    try:
        writable_folder(run_dir)
    except UnwritableFolder as exc:
        raise BioCAPError(f"--logs: cannot write the run folder {run_dir}: {exc.reason}") from exc


def default_name(cfg: TrainConfig) -> str:
    model = Path(cfg.model).stem if cfg.model.endswith(".json") else cfg.model.replace("/", "-")
    return f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-model_{model}-lr_{cfg.lr:g}-b_{cfg.batch_size}"


class Trainer:
    """Model, optimiser, loss and (under torchrun) DDP for one run; :meth:`train_step` is one step."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, total_steps: int):
        self.cfg, self.info, self.total_steps = cfg, info, total_steps
        self.device = info.device
        torch.manual_seed(cfg.seed)
        if cfg.pretrained:
            self.model = load_model(cfg.model, cfg.pretrained, device=self.device, precision=cfg.precision)
        else:
            self.model = build_model(cfg.model, precision=cfg.precision, device=self.device)
        self.model.train()
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.wd, (cfg.beta1, cfg.beta2), cfg.eps)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "amp" else None
        self.loss = ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad, cache_labels=True,
                             rank=info.rank, world_size=info.world_size)
        self.ddp = None
        if info.enabled:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not cfg.joint_loss,
            )
        self.forward = self.ddp if self.ddp is not None else self.model
        if cfg.torchcompile:
            self.forward = torch.compile(self.forward)
        self.input_dtype = input_dtype(cfg.precision)

    # ---- one step ----
    def heads_of(self, text_type: str) -> tuple[str, ...]:
        return ("tax", "caption") if self.cfg.joint_loss else (head_of(text_type),)

    def _features(self, out: dict[str, torch.Tensor], heads: tuple[str, ...], n: int) -> dict[str, torch.Tensor]:
        feats = {f"image_{h}": out[f"image_features_{h}"] for h in heads}
        texts = out["text_features"].split(n) if len(heads) == 2 else (out["text_features"],)
        feats.update({f"text_{h}": t for h, t in zip(heads, texts)})
        return feats

    def _losses(self, feats: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                heads: tuple[str, ...], scale_grad: bool = True) -> dict[str, torch.Tensor]:
        scales = {"tax": out["logit_scale"], "caption": out["logit_scale_caption"]}
        if not scale_grad:
            scales = {h: s.detach() for h, s in scales.items()}
        losses = {h: self.loss(feats[f"image_{h}"], feats[f"text_{h}"], scales[h]) for h in heads}
        weights = {"tax": 1.0, "caption": self.cfg.caption_loss_weight if self.cfg.joint_loss else 1.0}
        losses["loss"] = sum(weights[h] * losses[h] for h in heads)
        return losses

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def train_step(self, step: int, micro: list[dict[str, Any]]) -> dict[str, Any]:
        """One optimiser step on ``accum_freq`` micro-batches of this rank; raises TrainingDiverged
        (before updating the weights) if the loss is not finite on any rank."""
        cfg = self.cfg
        text_type = text_type_for_step(step, cfg.seed, cfg.text_type, cfg.caption_share, cfg.joint_loss)
        for batch in micro:
            if batch.get("text_type", text_type) != text_type:
                raise RuntimeError(f"step {step}: data has text type {batch['text_type']!r}, trainer {text_type!r}")
        heads = self.heads_of(text_type)
        lr = learning_rate(step, cfg.lr, cfg.warmup, self.total_steps, cfg.lr_scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = [b["image"].to(self.device, dtype=self.input_dtype, non_blocking=True) for b in micro]
        texts = [(torch.cat([b["text"], b["caption_text"]]) if len(heads) == 2 else b["text"]).to(
            self.device, non_blocking=True) for b in micro]
        self.optimizer.zero_grad(set_to_none=True)
        amp = autocast(self.device, cfg.precision, inputs_cast=True)
        if len(micro) == 1:
            with amp:
                out = self.forward(images[0], texts[0], heads=heads)
                losses = self._losses(self._features(out, heads, len(images[0])), out, heads)
            self._backward(losses["loss"])
        else:  # OpenCLIP's accumulation: every micro-batch sees the others' cached features as negatives
            with torch.no_grad(), amp:
                cached = [self._features(self.forward(i, t, heads=heads), heads, len(i)) for i, t in zip(images, texts)]
            for j in range(len(micro)):
                last = j == len(micro) - 1
                sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
                with sync, amp:
                    out = self.forward(images[j], texts[j], heads=heads)
                    mine = self._features(out, heads, len(images[j]))
                    feats = {k: torch.cat([c[k] for c in cached[:j]] + [mine[k]] + [c[k] for c in cached[j + 1:]])
                             for k in mine}
                    # every micro-batch's loss is the whole batch's loss: let one of them train the
                    # temperatures, or their gradient would be accum_freq times too large (OpenCLIP's is)
                    losses = self._losses(feats, out, heads, scale_grad=last)
                    self._backward(losses["loss"])
        values = [losses["loss"].detach().float()]
        values += [losses[h].detach().float() if h in losses else torch.zeros((), device=self.device)
                   for h in ("tax", "caption")]
        bad = sum((~torch.isfinite(v)).float() for v in values)
        reduced = distributed.sum_tensor(self.info, torch.stack(values + [bad]))
        if reduced[-1].item() > 0:
            raise TrainingDiverged(f"loss is {values[0].item()} at step {step} (text type {text_type})")
        if self.scaler is not None:
            if cfg.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.optimizer.step()
        self.model.clamp_logit_scales()
        mean = (reduced[:3] / self.info.world_size).tolist()
        return {"loss": mean[0], "text_type": text_type, "heads": heads, "lr": lr,
                **{f"loss_{h}": mean[1 + i] for i, h in enumerate(("tax", "caption")) if h in heads}}

    # ---- state ----
    def state(self, step: int, data_state: list[Any]) -> dict[str, Any]:
        return {
            "step": step, "name": self.cfg.name, "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "model_cfg": self.model.model_cfg, "config": self.cfg.to_dict(),
            "world_size": self.info.world_size, "data_state": data_state,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        load_weights(self.model, ckpt)
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    # ---- evaluation ----
    @torch.no_grad()
    def zeroshot_top1(self, dataset: ClassificationSet) -> float:
        """Top-1 of the taxonomic head on a zero-shot classification set (the original's protocol)."""
        precision = self.cfg.precision
        self.model.eval()
        try:
            feats = encode_images(self.model, dataset.paths, head="tax", batch_size=256, device=self.device,
                                  precision=precision)
            weights = classifier_weights(self.model, dataset.classnames, TEMPLATES[:self.cfg.zeroshot_templates],
                                         device=self.device, precision=precision)
        finally:
            self.model.train()
        return topk_accuracy(feats @ weights, torch.tensor(dataset.labels), ks=(1,))[1]

    @torch.no_grad()
    def validate(self, captions: CaptionIndex | None, draft_size: int | None) -> tuple[dict[str, float], DataCounts]:
        """Mean taxonomic and caption CLIP loss over every validation sample (rank 0, one process), and the
        validation samples skipped as bad."""
        cfg = self.cfg
        urls, _ = expand_sources(cfg.val_data)
        stream = ValStream(urls, cfg.batch_size, cfg.seed, image_transform(self.model, train=False),
                           self.model.tokenizer(), captions, draft_size)
        loss = ClipLoss()
        totals, n = {"tax": 0.0, "caption": 0.0}, 0
        counts = {}  # worker -> its skipped samples so far
        self.model.eval()
        try:
            for batch in loader(stream, min(cfg.workers, len(urls))):
                counts[batch["worker"]] = batch["counts"]
                if "image" not in batch:
                    continue
                size = len(batch["image"])
                with autocast(self.device, cfg.precision, inputs_cast=True):
                    out = self.model(batch["image"].to(self.device, dtype=self.input_dtype),
                                     torch.cat([batch["text"], batch["caption_text"]]).to(self.device))
                    feats = self._features(out, ("tax", "caption"), size)
                    scales = {"tax": out["logit_scale"], "caption": out["logit_scale_caption"]}
                    for h in totals:
                        totals[h] += loss(feats[f"image_{h}"], feats[f"text_{h}"], scales[h]).item() * size
                n += size
        finally:
            self.model.train()
        problems = DataCounts.merge(counts.values())
        if n == 0:
            raise ValueError(f"--val-data {cfg.val_data}: no readable validation samples ({problems.summary()})")
        result = {f"loss_{h}": v / n for h, v in totals.items()}
        result["loss"] = (1 - cfg.caption_share) * result["loss_tax"] + cfg.caption_share * result["loss_caption"]
        result["samples"] = n
        return result, problems

    # ---- the run ----
    def fit(self, plan: RunPlan) -> TrainResult:
        cfg, info = self.cfg, self.info
        started = time.time()
        run_dir = cfg.run_dir
        console = Console(stderr=True, highlight=False)

        def say(message: str) -> None:
            if info.is_main:
                console.print(message, markup=False)

        resume, ckpt = self._resume_checkpoint(say)
        if resume is None and info.is_main and list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already has checkpoints; pass --resume latest to continue it "
                                  "or choose another --name")
        if ckpt is not None and int(ckpt["step"]) >= plan.total_steps:
            # Saving again would rewrite the final checkpoint (new mtime, no data position), and eval
            # would take it for a new model.
            say(f"{run_dir} already finished: {resume} is at step {ckpt['step']} of {plan.total_steps}; "
                "nothing to do (raise --epochs or --steps to train further)")
            return TrainResult(run_dir, resume, int(ckpt["step"]), rank=info.rank, finished=True)
        if info.is_main:
            removed = remove_partial_checkpoints(run_dir)
            if removed:
                say(f"removed {len(removed)} partial checkpoint file(s) of an interrupted write: "
                    + ", ".join(p.name for p in removed))
        metrics = MetricsLog(run_dir, cfg.report_to, cfg.to_dict(), cfg.wandb_project_name, enabled=info.is_main)
        if info.is_main:
            atomic_write(run_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(cfg.to_dict(), indent=2)))

        start_step, data_state = 0, None
        if ckpt is not None:
            self.load_state(ckpt)
            start_step = int(ckpt["step"])
            data_state = self._data_state_for_resume(ckpt, say)
            say(f"resumed from {resume} at step {start_step}")
        captions = self._caption_index(run_dir)
        zs_set = self._zeroshot_set() if info.is_main else None
        result = TrainResult(run_dir, None, start_step, rank=info.rank)
        if zs_set is not None:
            result.chance = 1 / len(zs_set.classnames)
            result.zeroshot["before"] = top1 = self.zeroshot_top1(zs_set)
            metrics.write("zeroshot", start_step, top1=top1, when="before", classes=len(zs_set.classnames))
            say(f"zero-shot top-1 before training: {100 * top1:.1f}% ({len(zs_set.classnames)} classes, "
                f"chance {100 * result.chance:.1f}%)")
        distributed.barrier(info)
        say(f"training {plan.total_steps} steps ({plan.steps_per_epoch}/epoch, global batch "
            f"{cfg.batch_size * cfg.accum_freq * info.world_size}) on {info.world_size} x {self.device}; "
            f"logs in {run_dir}")

        transform = image_transform(self.model, train=True)
        tokenizer = self.model.tokenizer()
        draft = short_side(self.model.image_size) if cfg.draft_decode else None
        progress = ProgressDisplay(plan.total_steps, start_step, enabled=info.is_main and cfg.progress,
                                   console=console)
        step, last_saved, epoch_problems = start_step, None, DataCounts()
        recent = {"tax": deque(maxlen=20), "caption": deque(maxlen=20)}
        head_steps = {"tax": 0, "caption": 0}
        interval_start, interval_steps, interval_wait = time.time(), 0, 0.0
        global_batch = cfg.batch_size * cfg.accum_freq * info.world_size
        position: dict[str, Any] = {}
        # A stream restarts every epoch and its shuffle buffer reads ahead while it fills; cap the buffer
        # at half of what one stream yields per epoch so small data sets are not read 2-3 times.
        stream_samples = -(-plan.steps_per_epoch * cfg.accum_freq // plan.num_streams) * cfg.batch_size
        shuffle_buffer = max(1, min(cfg.shuffle_buffer, stream_samples // 2))

        def save(at: int) -> Path | None:
            nonlocal last_saved
            gathered = distributed.gather_objects(info, position)
            path = None
            if info.is_main:
                path = save_checkpoint(run_dir, at, self.state(at, gathered), cfg.keep_checkpoints)
                metrics.write("checkpoint", at, path=str(path))
            last_saved = at
            return path

        try:
            while step < plan.total_steps:
                epoch = step // plan.steps_per_epoch
                first = epoch * plan.steps_per_epoch
                done = (step - first) * cfg.accum_freq
                restored = data_state if data_state and data_state.get("epoch") == epoch \
                    and data_state.get("microbatches") == done else None
                if done and restored is None:
                    say(f"warning: no stream position for step {step}; epoch {epoch} continues with fresh "
                        "streams (not bit-identical to an uninterrupted run)")
                streams = (restored or {}).get("streams", {})
                spec = StreamSpec(
                    urls=plan.urls, weights=plan.weights, resampled=cfg.dataset_resampled,
                    batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=info.rank,
                    world_size=info.world_size, num_streams=plan.num_streams,
                    microbatches=plan.steps_per_epoch * cfg.accum_freq, first_step=first,
                    accum_freq=cfg.accum_freq, transform=transform, tokenizer=tokenizer,
                    text_type=cfg.text_type, caption_share=cfg.caption_share, joint=cfg.joint_loss,
                    captions=captions, draft_size=draft, shuffle_buffer=shuffle_buffer, start=done,
                    skip={int(w): s["consumed"] for w, s in streams.items()},
                    counts={int(w): s["counts"] for w, s in streams.items()},
                )
                position = {"epoch": epoch, "microbatches": done,
                            "streams": {int(w): dict(s) for w, s in streams.items()}}
                batches = iter(loader(TrainStream(spec), cfg.workers, pin_memory=self.device.type == "cuda"))
                end = min(plan.total_steps, first + plan.steps_per_epoch)
                while step < end:
                    t0 = time.time()
                    micro = []
                    for _ in range(cfg.accum_freq):
                        batch = next(batches)
                        if batch["index"] != position["microbatches"]:
                            raise RuntimeError(f"data stream out of order: got micro-batch {batch['index']}, "
                                               f"expected {position['microbatches']}")
                        position["microbatches"] += 1
                        position["streams"][batch["stream"]] = {"consumed": batch["consumed"],
                                                                "counts": batch["counts"]}
                        micro.append(batch)
                    interval_wait += time.time() - t0
                    out = self.train_step(step, micro)
                    step += 1
                    interval_steps += 1
                    for h in out["heads"]:
                        recent[h].append(out[f"loss_{h}"])
                        head_steps[h] += 1
                    elapsed = time.time() - interval_start
                    rate = interval_steps * global_batch / max(elapsed, 1e-9)
                    status = " ".join(f"{h} {sum(v) / len(v):.3f}" for h, v in recent.items() if v)
                    log_now = step % cfg.log_every_n_steps == 0 or step == plan.total_steps
                    progress.update(step, f"loss {status} | {rate:.0f} samples/s", log_line=log_now,
                                    eta_s=(plan.total_steps - step) * global_batch / max(rate, 1e-9))
                    if log_now:
                        done_steps = sum(head_steps.values())
                        metrics.write(
                            "train", step, epoch=epoch, lr=out["lr"], text_type=out["text_type"], loss=out["loss"],
                            **{f"loss_{h}": sum(v) / len(v) for h, v in recent.items() if v},
                            scale_tax=self.model.logit_scale.exp().item(),
                            scale_caption=self.model.logit_scale_caption.exp().item(),
                            share_tax=head_steps["tax"] / done_steps, share_caption=head_steps["caption"] / done_steps,
                            samples_per_s=rate, data_wait_s=interval_wait / interval_steps,
                        )
                        interval_start, interval_steps, interval_wait = time.time(), 0, 0.0
                    if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0:
                        save(step)
                del batches
                problems = DataCounts.merge(
                    s["counts"] for per_rank in distributed.gather_objects(info, position["streams"])
                    for s in per_rank.values())
                epoch_problems = DataCounts.merge([epoch_problems, problems])
                metrics.write("data", step, epoch=epoch, skipped=dict(problems.counts))
                if problems.counts:
                    say(f"epoch {epoch}: skipped {sum(problems.counts.values())} bad input(s): {problems.summary()}")
                if step == first + plan.steps_per_epoch:  # a whole epoch done
                    completed = epoch + 1
                    if cfg.val_data and (completed % cfg.val_frequency == 0 or step == plan.total_steps):
                        if info.is_main:
                            val, val_problems = self.validate(captions, draft)
                            metrics.write("val", step, epoch=epoch, **val, skipped=dict(val_problems.counts))
                            if val_problems.counts:
                                say(f"epoch {epoch} validation: skipped {sum(val_problems.counts.values())} bad "
                                    f"input(s): {val_problems.summary()}")
                            say(f"epoch {epoch} validation: taxonomic loss {val['loss_tax']:.4f}, caption loss "
                                f"{val['loss_caption']:.4f} ({val['samples']} samples)")
                        distributed.barrier(info)
                    if zs_set is not None and completed % cfg.zeroshot_frequency == 0 and step < plan.total_steps:
                        top1 = self.zeroshot_top1(zs_set)
                        metrics.write("zeroshot", step, top1=top1, epoch=epoch)
                        say(f"epoch {epoch} zero-shot top-1: {100 * top1:.1f}%")
                    if cfg.save_frequency and completed % cfg.save_frequency == 0 and last_saved != step:
                        save(step)
                    distributed.barrier(info)
        except TrainingDiverged as exc:
            progress.close()
            last = latest_checkpoint(run_dir)
            metrics.write("diverged", step, message=str(exc), last_checkpoint=str(last) if last else None)
            metrics.close()
            keep = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
            raise TrainingDiverged(
                f"{exc}; stopped without applying it ({keep}). Lower --lr, lengthen --warmup or use "
                f"--precision amp_bf16/fp32, then --resume {last if last else 'latest'}"
            ) from None
        progress.close()
        final = save(step) if last_saved != step else latest_checkpoint(run_dir)
        result.checkpoint, result.step = final, step
        result.data_problems = dict(epoch_problems.counts)
        if zs_set is not None:
            result.zeroshot["after"] = top1 = self.zeroshot_top1(zs_set)
            metrics.write("zeroshot", step, top1=top1, when="after")
        result.seconds = time.time() - started
        metrics.close()
        distributed.barrier(info)
        return result

    def _data_state_for_resume(self, ckpt: dict[str, Any], say) -> dict[str, Any] | None:
        old = ckpt.get("config", {})
        changed = [f for f in STREAM_FIELDS if f in old and old[f] != getattr(self.cfg, f)]
        if ckpt.get("world_size", self.info.world_size) != self.info.world_size:
            changed.append(f"world size ({ckpt.get('world_size')} -> {self.info.world_size})")
        states = ckpt.get("data_state") or []
        if changed or len(states) != self.info.world_size:
            say(f"warning: resuming with changed {changed or ['data state']}: the data stream restarts at the "
                "current epoch position instead of continuing exactly")
            return None
        return states[self.info.rank]

    def _resume_checkpoint(self, say) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to resume from and its contents; (None, None) for a fresh run.

        ``--resume latest`` skips an unreadable newest checkpoint (a bad disk, a copy cut short), saying
        so, sets it aside and takes the one before; rank 0 decides, so every rank resumes from the same
        one. If none is readable the run stops rather than silently starting over.
        """
        cfg = self.cfg
        if not cfg.resume:
            return None, None
        if cfg.resume != "latest":
            path = Path(cfg.resume)
            if not path.is_file():
                raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint file")
            return path, read_checkpoint(path)
        path, ckpt, unreadable = None, None, []
        if self.info.is_main:
            for _, candidate in reversed(list_checkpoints(cfg.run_dir)):
                try:
                    ckpt = read_checkpoint(candidate)
                except CheckpointError as exc:
                    unreadable.append((candidate, exc))
                    continue
                path = candidate
                break
            if unreadable and path is None:
                raise CheckpointError(f"--resume latest: no checkpoint of {cfg.run_dir} is readable; newest: "
                                      f"{unreadable[0][1]}")
            for bad, exc in unreadable:
                say(f"warning: {exc}; set aside as {set_aside(bad).name}, resuming from {path.name} instead")
        path = distributed.broadcast_object(self.info, path)
        if ckpt is None and path is not None:
            ckpt = read_checkpoint(path)
        return path, ckpt

    def _caption_index(self, run_dir: Path) -> CaptionIndex | None:
        if not self.cfg.captions:
            return None
        directory = index_dir_for(self.cfg.captions, run_dir)
        if self.info.local_rank == 0:
            CaptionIndex.build(self.cfg.captions, directory)
        distributed.barrier(self.info)
        return CaptionIndex(directory)

    def _zeroshot_set(self) -> ClassificationSet | None:
        if not self.cfg.zeroshot_data:
            return None
        root = self.cfg.zeroshot_images or str(Path(self.cfg.zeroshot_data).parent)
        return ClassificationSet.from_csv(self.cfg.zeroshot_data, root, self.cfg.zeroshot_label_type)


def train(cfg: TrainConfig) -> TrainResult:
    """Run a whole training (single process, or one rank of a torchrun/SLURM job)."""
    cfg.validate()
    info = distributed.init(cfg.device)
    distributed.set_cpu_threads(info, cfg.workers)
    try:
        plan = plan_run(cfg, info)
        cfg.name = distributed.broadcast_object(info, cfg.name or default_name(cfg))
        prepare_run_dir(cfg.run_dir)
        return Trainer(cfg, info, plan.total_steps).fit(plan)
    finally:
        distributed.cleanup(info)
