"""Where metrics go: always a JSONL file, TensorBoard and W&B when asked, and the console.

Only rank 0 reports. On a terminal a rich progress bar shows the step, the
recent loss of each head, samples/s and the ETA; elsewhere (CI, log files)
a plain line is printed every ``--log-every-n-steps`` steps.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class MetricsLog:
    """Appends one JSON object per record to ``metrics.jsonl``; mirrors scalars to
    TensorBoard/W&B."""

    def __init__(
        self,
        run_dir: Path,
        report_to: str,
        config: dict[str, Any],
        project: str,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        targets = {t.strip() for t in report_to.split(",") if t.strip()}
        if "tensorboard" in targets:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError(
                    "--report-to tensorboard needs TensorBoard: "
                    "pip install 'biocap-train[tensorboard]'"
                ) from exc
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if "wandb" in targets:
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError(
                    "--report-to wandb needs Weights & Biases: pip install 'biocap-train[wandb]'"
                ) from exc
            self.wandb = wandb
            wandb.init(
                project=project,
                name=config.get("name"),
                id=config.get("name"),
                config=config,
                resume="allow",
                dir=str(run_dir),
            )

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {
            f"{kind}/{k}": v
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
        }
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None and scalars:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class ProgressDisplay:
    """A rich progress bar on a terminal; periodic plain lines otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled, self.total = enabled, total
        self.bar = None
        if enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, status="")
            self.bar.start()

    def update(self, step: int, status: str, log_line: bool, eta_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, status=status)
        elif log_line:
            eta = f"{int(eta_s) // 60}:{int(eta_s) % 60:02d}"
            print(f"step {step}/{self.total}: {status} | ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class StepLog:
    """Every step's progress line, and every ``--log-every-n-steps`` steps a ``train`` record: the
    recent loss of each head (last 20 steps that trained it), the share of steps per head, samples/s
    and the time spent waiting for data, over the steps since the last record."""

    def __init__(
        self,
        metrics: MetricsLog,
        progress: ProgressDisplay,
        total_steps: int,
        global_batch: int,
        every: int,
    ):
        self.metrics, self.progress, self.total_steps = metrics, progress, total_steps
        self.global_batch, self.every = global_batch, every
        self.recent = {"tax": deque(maxlen=20), "caption": deque(maxlen=20)}
        self.head_steps = {"tax": 0, "caption": 0}
        self._new_interval()

    def _new_interval(self) -> None:
        self.interval_start, self.interval_steps, self.interval_wait = time.time(), 0, 0.0

    def step(self, step: int, epoch: int, out: dict[str, Any], waited_s: float, model) -> None:
        """Record step ``step`` (counted from 1) after training it; ``out`` is what the step
        returned."""
        self.interval_steps += 1
        self.interval_wait += waited_s
        for h in out["heads"]:
            self.recent[h].append(out[f"loss_{h}"])
            self.head_steps[h] += 1
        rate = (
            self.interval_steps * self.global_batch / max(time.time() - self.interval_start, 1e-9)
        )
        status = " ".join(f"{h} {sum(v) / len(v):.3f}" for h, v in self.recent.items() if v)
        log_now = step % self.every == 0 or step == self.total_steps
        self.progress.update(
            step,
            f"loss {status} | {rate:.0f} samples/s",
            log_line=log_now,
            eta_s=(self.total_steps - step) * self.global_batch / max(rate, 1e-9),
        )
        if not log_now:
            return
        done_steps = sum(self.head_steps.values())
        self.metrics.write(
            "train",
            step,
            epoch=epoch,
            lr=out["lr"],
            text_type=out["text_type"],
            loss=out["loss"],
            **{f"loss_{h}": sum(v) / len(v) for h, v in self.recent.items() if v},
            scale_tax=model.logit_scale.exp().item(),
            scale_caption=model.logit_scale_caption.exp().item(),
            share_tax=self.head_steps["tax"] / done_steps,
            share_caption=self.head_steps["caption"] / done_steps,
            samples_per_s=rate,
            data_wait_s=self.interval_wait / self.interval_steps,
        )
        self._new_interval()
