"""Where metrics go: always a JSONL file, TensorBoard and W&B when asked, and the console.

Only rank 0 reports. On a terminal a rich progress bar shows the step, the
recent loss of each head, samples/s and the ETA; elsewhere (CI, log files)
a plain line is printed every ``--log-every-n-steps`` steps.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class MetricsLog:
    """Appends one JSON object per record to ``metrics.jsonl``; mirrors scalars to TensorBoard/W&B."""

    def __init__(self, run_dir: Path, report_to: str, config: dict[str, Any], project: str, enabled: bool = True):
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
                raise RuntimeError("--report-to tensorboard needs TensorBoard: "
                                   "pip install 'biocap-train[tensorboard]'") from exc
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if "wandb" in targets:
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("--report-to wandb needs Weights & Biases: pip install 'biocap-train[wandb]'") from exc
            self.wandb = wandb
            wandb.init(project=project, name=config.get("name"), id=config.get("name"), config=config,
                       resume="allow", dir=str(run_dir))

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {f"{kind}/{k}": v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
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
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=self.console,
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
