"""The BioCAP training loop: one optimisation step, and the run that repeats it.

The path of a sample: shard → raw sample (:mod:`biocap_train.samples`) → micro-batch
(:mod:`biocap_train.batches`: image prepared, texts tokenized) made by a data stream
(:mod:`biocap_train.streams`) → one rank's steps (:mod:`biocap_train.train_batches`) → model
(:mod:`biocap_core.model`) → loss (:mod:`biocap_train.loss`) → this file's step.

One optimisation step trains one head, chosen by the text its batches carry
(:class:`biocap_train.schedule.StepText`, drawn where they are made): a caption step computes
only the caption head and ``logit_scale_caption``, a taxonomic step only ``visual.proj`` and
``logit_scale``, so the other head's parameters stay out of the graph and
AdamW leaves them untouched (grad None), as in the original. With ``--caption-head shared``
captions train ``visual.proj`` and ``logit_scale`` too (:mod:`biocap_train.loss`), and the caption
head is never in the graph. Under DDP this
varying graph needs ``find_unused_parameters=True``; with ``--joint-loss``
every parameter is used every step and it is off. The loss is OpenCLIP's
``ClipLoss`` (``--local-loss --gather-with-grad`` by default, which gives the
gradient of the single-process loss on the global batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from open_clip import ClipLoss
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from biocap_core.checkpoints import load_model, load_weights
from biocap_core.errors import BioCAPError, UnwritableFolder
from biocap_core.fileio import atomic_write, writable_folder
from biocap_core.gpu_decode import require_cuda
from biocap_core.model import build_model
from biocap_core.precision import autocast, input_dtype
from biocap_core.zeroshot import ClassificationSet
from biocap_train import distributed
from biocap_train.bad_data import DataCounts
from biocap_train.batches import Batch
from biocap_train.captions import CaptionIndex, index_dir_for
from biocap_train.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
    resume_checkpoint,
    save_checkpoint,
)
from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo
from biocap_train.loss import HeadLosses
from biocap_train.optim import make_optimizer
from biocap_train.reporting import MetricsLog, ProgressDisplay, StepLog
from biocap_train.run_plan import RunPlan, plan_run, resume_position
from biocap_train.schedule import StepText, learning_rate
from biocap_train.train_batches import TrainBatches
from biocap_train.validation import validation_loss, zeroshot_set, zeroshot_top1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


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


@dataclass
class Run:
    """What one :meth:`Trainer.fit` works with besides the model: where it writes and what it
    reads."""

    dir: Path
    say: Callable[[str], None]
    metrics: MetricsLog
    data: TrainBatches
    captions: CaptionIndex | None
    zeroshot: ClassificationSet | None
    problems: DataCounts = field(default_factory=DataCounts)
    last_saved: int | None = None


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder and check it takes files, before the model is built: a --logs path
    under a regular file or in an unwritable place then fails at once, naming the path, not as a
    traceback later.
    """
    try:
        writable_folder(run_dir)
    except UnwritableFolder as exc:
        raise BioCAPError(f"--logs: cannot write the run folder {run_dir}: {exc.reason}") from exc


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh run must not mix its checkpoints with an earlier run's under the same name."""
    if list_checkpoints(run_dir):
        raise FileExistsError(
            f"{run_dir} already has checkpoints; pass --resume latest to "
            "continue it or choose another --name"
        )


def default_name(cfg: TrainConfig) -> str:
    model = Path(cfg.model).stem if cfg.model.endswith(".json") else cfg.model.replace("/", "-")
    return f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-model_{model}-lr_{cfg.lr:g}-b_{cfg.batch_size}"


def step_text_of(micro: list[Batch], step: int) -> StepText:
    """What a step trains on: what its micro-batches carry, the same on each."""
    kinds = {b.step_text for b in micro}
    if len(kinds) != 1:
        raise RuntimeError(f"step {step}: micro-batches of different texts {kinds}")
    return kinds.pop()


def timed(items: Iterable) -> Iterator[tuple[float, Any]]:
    """Each item with the seconds spent waiting for it (the data wait of a training step)."""
    items = iter(items)
    while True:
        t0 = time.time()
        try:
            item = next(items)
        except StopIteration:
            return
        yield time.time() - t0, item


class Trainer:
    """Model, optimiser, loss and (under torchrun) DDP for one run; :meth:`train_step` is one step,
    :meth:`fit` the run."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, total_steps: int):
        self.cfg, self.info, self.total_steps = cfg, info, total_steps
        self.device = info.device
        torch.manual_seed(cfg.seed)
        if cfg.pretrained:
            self.model = load_model(
                cfg.model, cfg.pretrained, device=self.device, precision=cfg.precision
            )
        else:
            self.model = build_model(cfg.model, precision=cfg.precision, device=self.device)
        self.model.train()
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.optimizer = make_optimizer(
            self.model, cfg.lr, cfg.wd, (cfg.beta1, cfg.beta2), cfg.eps, fused=cfg.fused_adamw
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "amp" else None
        clip_loss = ClipLoss(
            local_loss=cfg.local_loss,
            gather_with_grad=cfg.gather_with_grad,
            cache_labels=True,
            rank=info.rank,
            world_size=info.world_size,
        )
        self.loss = HeadLosses(
            clip_loss, cfg.caption_loss_weight if cfg.joint_loss else 1.0, cfg.caption_head
        )
        self.ddp = None
        if info.enabled:
            self.ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # a shared caption head leaves the caption projector out of every step
                find_unused_parameters=not cfg.joint_loss or cfg.caption_head == "shared",
            )
        self.forward = self.ddp if self.ddp is not None else self.model
        if cfg.torchcompile:
            self.forward = torch.compile(self.forward, mode=cfg.torchcompile_mode)
        self.input_dtype = input_dtype(cfg.precision)

    # ---- one step ----
    def train_step(self, step: int, micro: list[Batch]) -> dict[str, Any]:
        """One optimiser step on ``accum_freq`` micro-batches of this rank, training the head(s)
        their :class:`StepText` names; raises TrainingDiverged (before updating the weights) if the
        loss is not finite on any rank."""
        step_text = step_text_of(micro, step)
        text_type, heads = step_text.text_type, step_text.heads
        lr = learning_rate(
            step, self.cfg.lr, self.cfg.warmup, self.total_steps, self.cfg.lr_scheduler
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        losses = self._forward_backward(micro, heads)
        mean = self._mean_losses(losses, step, text_type)
        self._optimizer_step()
        return {
            "loss": mean["loss"],
            "text_type": text_type,
            "heads": heads,
            "lr": lr,
            **{f"loss_{h}": mean[h] for h in heads},
        }

    def _forward_backward(
        self, micro: list[Batch], heads: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        # TrainBatches hands the images over on the device already (a no-op then)
        images = [b.image.to(self.device, dtype=self.input_dtype, non_blocking=True) for b in micro]
        texts = [
            (torch.cat([b.text, b.caption_text]) if len(heads) == 2 else b.text).to(
                self.device, non_blocking=True
            )
            for b in micro
        ]
        amp = autocast(self.device, self.cfg.precision, inputs_cast=True)
        projectors = self.loss.projectors(heads)
        if len(micro) == 1:
            with amp:
                out = self.forward(images[0], texts[0], heads=projectors)
                losses = self.loss(self.loss.features(out, heads, len(images[0])), out, heads)
            self._backward(losses["loss"])
            return losses
        # OpenCLIP's accumulation: every micro-batch sees the others' cached features as negatives
        with torch.no_grad(), amp:
            cached = [
                self.loss.features(self.forward(i, t, heads=projectors), heads, len(i))
                for i, t in zip(images, texts)
            ]
        for j in range(len(micro)):
            last = j == len(micro) - 1
            sync = (
                self.ddp.no_sync()
                if self.ddp is not None and not last
                else contextlib.nullcontext()
            )
            with sync, amp:
                out = self.forward(images[j], texts[j], heads=projectors)
                mine = self.loss.features(out, heads, len(images[j]))
                feats = {
                    k: torch.cat(
                        [c[k] for c in cached[:j]] + [mine[k]] + [c[k] for c in cached[j + 1 :]]
                    )
                    for k in mine
                }
                # every micro-batch's loss is the whole batch's loss: let one of them train the
                # temperatures, or their gradient would be accum_freq times too large (OpenCLIP's
                # is)
                losses = self.loss(feats, out, heads, scale_grad=last)
                self._backward(losses["loss"])
        return losses

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _mean_losses(
        self, losses: dict[str, torch.Tensor], step: int, text_type: str
    ) -> dict[str, float]:
        """The losses averaged over ranks; raises TrainingDiverged if one is not finite on any
        rank."""
        values = [losses["loss"].detach().float()]
        values += [
            losses[h].detach().float() if h in losses else torch.zeros((), device=self.device)
            for h in ("tax", "caption")
        ]
        bad = sum((~torch.isfinite(v)).float() for v in values)
        reduced = distributed.sum_tensor(self.info, torch.stack(values + [bad]))
        if reduced[-1].item() > 0:
            raise TrainingDiverged(
                f"loss is {values[0].item()} at step {step} (text type {text_type})"
            )
        return dict(zip(("loss", "tax", "caption"), (reduced[:3] / self.info.world_size).tolist()))

    def _optimizer_step(self) -> None:
        clip = self.cfg.grad_clip_norm
        if self.scaler is not None:
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.model.clamp_logit_scales()

    # ---- state ----
    def state(self, step: int, data_state: list[Any]) -> dict[str, Any]:
        return {
            "step": step,
            "name": self.cfg.name,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "model_cfg": self.model.model_cfg,
            "config": self.cfg.to_dict(),
            "world_size": self.info.world_size,
            "data_state": data_state,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        load_weights(self.model, ckpt)
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    # ---- the run ----
    def fit(self, plan: RunPlan) -> TrainResult:
        """Train from step 0, or ``--resume``'s checkpoint, to ``plan.total_steps``."""
        cfg, info, started = self.cfg, self.info, time.time()
        console = Console(stderr=True, highlight=False)

        def say(message: str) -> None:
            if info.is_main:
                console.print(message, markup=False)

        resume, ckpt = resume_checkpoint(cfg, info, say)
        if resume is None:
            with distributed.failing_together(info):
                if info.is_main:
                    refuse_to_overwrite(cfg.run_dir)
        if ckpt is not None and int(ckpt["step"]) >= plan.total_steps:
            # Saving again would rewrite the final checkpoint (new mtime, no data position), and
            # eval would take it for a new model.
            say(
                f"{cfg.run_dir} already finished: {resume} is at step {ckpt['step']} of"
                f" {plan.total_steps}; nothing to do (raise --epochs or --steps to train further)"
            )
            return TrainResult(
                cfg.run_dir, resume, int(ckpt["step"]), rank=info.rank, finished=True
            )
        run, step = self._open_run(plan, resume, ckpt, say)
        result = TrainResult(cfg.run_dir, None, step, rank=info.rank)
        with distributed.failing_together(info):  # rank 0's evaluation
            self._zeroshot_before(run, step, result)
        global_batch = cfg.batch_size * cfg.accum_freq * info.world_size
        say(
            f"training {plan.total_steps} steps ({plan.steps_per_epoch}/epoch, global batch"
            f" {global_batch}) on {info.world_size} x {self.device}; logs in {cfg.run_dir}"
        )
        progress = ProgressDisplay(
            plan.total_steps, step, enabled=info.is_main and cfg.progress, console=console
        )
        log = StepLog(run.metrics, progress, plan.total_steps, global_batch, cfg.log_every_n_steps)
        try:
            while step < plan.total_steps:
                epoch = step // plan.steps_per_epoch
                for waited, micro in timed(run.data.steps(step, plan.epoch_end(step))):
                    out = self.train_step(step, micro)
                    step += 1
                    log.step(step, epoch, out, waited, self.model)
                    if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0:
                        self._save(run, step)
                self._end_epoch(run, plan, epoch, step)
        except TrainingDiverged as exc:
            progress.close()
            raise self._diverged(run, step, exc) from None
        progress.close()
        result.checkpoint = (
            self._save(run, step) if run.last_saved != step else latest_checkpoint(cfg.run_dir)
        )
        result.step, result.data_problems = step, dict(run.problems.counts)
        with distributed.failing_together(info):  # rank 0's evaluation and logs
            if run.zeroshot is not None:
                result.zeroshot["after"] = top1 = zeroshot_top1(
                    self.model, run.zeroshot, cfg, self.device
                )
                run.metrics.write("zeroshot", step, top1=top1, when="after")
            result.seconds = time.time() - started
            run.metrics.close()
        return result

    def _open_run(
        self,
        plan: RunPlan,
        resume: Path | None,
        ckpt: dict[str, Any] | None,
        say: Callable[[str], None],
    ) -> tuple[Run, int]:
        """Clean the run folder of interrupted writes, start its logs, restore the checkpoint's
        state if resuming; the run and its first step."""
        cfg, info = self.cfg, self.info
        with distributed.failing_together(info):  # what rank 0 alone reads and writes
            if info.is_main:
                removed = remove_partial_checkpoints(cfg.run_dir)
                if removed:
                    say(
                        f"removed {len(removed)} partial checkpoint file(s) of an interrupted "
                        "write: " + ", ".join(p.name for p in removed)
                    )
            metrics = MetricsLog(
                cfg.run_dir,
                cfg.report_to,
                cfg.to_dict(),
                cfg.wandb_project_name,
                enabled=info.is_main,
            )
            if info.is_main:
                text = json.dumps(cfg.to_dict(), indent=2)
                atomic_write(cfg.run_dir / "config.json", lambda tmp: tmp.write_text(text))
            zeroshot = zeroshot_set(cfg) if info.is_main else None
        start, position = 0, None
        if ckpt is not None:
            self.load_state(ckpt)
            start = int(ckpt["step"])
            position = resume_position(ckpt, cfg, info, say)
            say(f"resumed from {resume} at step {start}")
        captions = self._caption_index(cfg.run_dir)
        data = TrainBatches(cfg, plan, info, self.model, captions, position, say)
        return Run(cfg.run_dir, say, metrics, data, captions, zeroshot), start

    def _zeroshot_before(self, run: Run, step: int, result: TrainResult) -> None:
        if run.zeroshot is None:
            return
        classes = len(run.zeroshot.classnames)
        result.chance = 1 / classes
        result.zeroshot["before"] = top1 = zeroshot_top1(
            self.model, run.zeroshot, self.cfg, self.device
        )
        run.metrics.write("zeroshot", step, top1=top1, when="before", classes=classes)
        run.say(
            f"zero-shot top-1 before training: {100 * top1:.1f}% ({classes} classes, "
            f"chance {100 * result.chance:.1f}%)"
        )

    def _end_epoch(self, run: Run, plan: RunPlan, epoch: int, step: int) -> None:
        """Report the epoch's bad samples; after a whole epoch, validate, zero-shot and save as
        configured."""
        cfg, info = self.cfg, self.info
        problems = run.data.problems()
        run.problems = DataCounts.merge([run.problems, problems])
        run.metrics.write("data", step, epoch=epoch, skipped=dict(problems.counts))
        if problems.counts:
            run.say(
                f"epoch {epoch}: skipped {sum(problems.counts.values())} bad input(s):"
                f" {problems.summary()}"
            )
        if step != (epoch + 1) * plan.steps_per_epoch:  # the run ended mid-epoch (--steps)
            return
        completed = epoch + 1
        with distributed.failing_together(info):  # rank 0's evaluation
            if (
                info.is_main
                and cfg.val_data
                and (completed % cfg.val_frequency == 0 or step == plan.total_steps)
            ):
                self._validate(run, epoch, step)
            if (
                run.zeroshot is not None
                and completed % cfg.zeroshot_frequency == 0
                and step < plan.total_steps
            ):
                top1 = zeroshot_top1(self.model, run.zeroshot, cfg, self.device)
                run.metrics.write("zeroshot", step, top1=top1, epoch=epoch)
                run.say(f"epoch {epoch} zero-shot top-1: {100 * top1:.1f}%")
        if cfg.save_frequency and completed % cfg.save_frequency == 0 and run.last_saved != step:
            self._save(run, step)
        distributed.barrier(info)

    def _validate(self, run: Run, epoch: int, step: int) -> None:
        val, problems = validation_loss(self.model, self.cfg, run.captions, self.device)
        run.metrics.write("val", step, epoch=epoch, **val, skipped=dict(problems.counts))
        if problems.counts:
            run.say(
                f"epoch {epoch} validation: skipped {sum(problems.counts.values())} bad "
                f"input(s): {problems.summary()}"
            )
        run.say(
            f"epoch {epoch} validation: taxonomic loss {val['loss_tax']:.4f}, caption loss "
            f"{val['loss_caption']:.4f} ({val['samples']} samples)"
        )

    def _save(self, run: Run, step: int) -> Path | None:
        """Save a checkpoint with every rank's stream position (rank 0 writes); its path on rank
        0."""
        gathered = distributed.gather_objects(self.info, run.data.position)
        path = None
        with distributed.failing_together(self.info):  # e.g. a full disk where rank 0 writes
            if self.info.is_main:
                path = save_checkpoint(
                    run.dir, step, self.state(step, gathered), self.cfg.keep_checkpoints
                )
                run.metrics.write("checkpoint", step, path=str(path))
        run.last_saved = step
        return path

    def _diverged(self, run: Run, step: int, exc: TrainingDiverged) -> TrainingDiverged:
        """Log the divergence and say how to go on from the last good checkpoint."""
        last = latest_checkpoint(run.dir)
        run.metrics.write(
            "diverged", step, message=str(exc), last_checkpoint=str(last) if last else None
        )
        run.metrics.close()
        keep = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
        return TrainingDiverged(
            f"{exc}; stopped without applying it ({keep}). Lower --lr, lengthen --warmup or use "
            f"--precision amp_bf16/fp32, then --resume {last if last else 'latest'}"
        )

    def _caption_index(self, run_dir: Path) -> CaptionIndex | None:
        if not self.cfg.captions:
            return None
        directory = index_dir_for(self.cfg.captions, run_dir)
        with distributed.failing_together(self.info):  # e.g. a table with duplicate uuids
            if self.info.local_rank == 0:
                CaptionIndex.build(self.cfg.captions, directory)
        return CaptionIndex(directory)


def train(cfg: TrainConfig) -> TrainResult:
    """Run a whole training (single process, or one rank of a torchrun/SLURM job)."""
    cfg.validate()
    info = distributed.init(cfg.device)
    distributed.set_cpu_threads(info, cfg.workers)
    try:
        if cfg.gpu_decode:
            require_cuda(info.device)
        plan = plan_run(cfg, info)
        # the caller's config stays as given; every rank takes rank 0's default name (its clock)
        name = distributed.broadcast_object(info, cfg.name or default_name(cfg))
        cfg = dataclasses.replace(cfg, name=name)
        prepare_run_dir(cfg.run_dir)
        return Trainer(cfg, info, plan.total_steps).fit(plan)
    finally:
        distributed.cleanup(info)
