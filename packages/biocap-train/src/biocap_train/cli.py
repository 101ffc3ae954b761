"""``biocap-train``: flags (OpenCLIP's names), an optional TOML/YAML config, or nothing for the
demo."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from biocap_core.errors import BioCAPError
from biocap_train.config import parse_args
from biocap_train.demo import demo_config, mark_latest, next_commands
from biocap_train.trainer import TrainingDiverged, train


def main(argv: Sequence[str] | None = None) -> None:
    cfg, user_set = parse_args(argv)
    demo = cfg.train_data is None
    if demo:
        print(
            "biocap-train: no --train-data given, running the demo on the toy tree of life "
            "(see biocap-train --help for the full recipe)",
            file=sys.stderr,
            flush=True,
        )
        cfg = demo_config(cfg, user_set)
    try:
        result = train(cfg)
    except TrainingDiverged as exc:
        sys.exit(f"biocap-train: training diverged: {exc}")
    except (BioCAPError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        sys.exit(f"biocap-train: error: {exc}")
    if result.rank != 0:
        return
    lines = [
        (
            f"already finished at step {result.step}; nothing trained or written"
            if result.finished
            else f"trained {result.step} steps in {result.seconds:.0f} s"
        )
    ]
    if "after" in result.zeroshot:
        before = result.zeroshot.get("before")
        lines.append(
            f"zero-shot top-1 ({cfg.zeroshot_data}): "
            + (f"before {100 * before:.1f}% -> " if before is not None else "")
            + f"after {100 * result.zeroshot['after']:.1f}% (chance {100 * result.chance:.1f}%)"
        )
    if result.data_problems:
        lines.append(f"skipped inputs: {result.data_problems}")
    checkpoint = result.checkpoint.resolve()
    lines.append(f"checkpoint: {checkpoint}")
    lines.append(f"metrics: {(result.run_dir / 'metrics.jsonl').resolve()}")
    lines.append(f"load it: biocap_core.checkpoints.load_model({cfg.model!r}, {str(checkpoint)!r})")
    if demo:
        try:
            lines.append(f"latest demo run: {mark_latest(result.run_dir)}")
        except OSError as exc:  # e.g. a folder of the user's at logs/demo/latest; the run is fine
            lines.append(f"latest demo run: not linked ({exc})")
        lines += ["next:", *(f"  {command}" for command in next_commands(checkpoint, cfg.model))]
    print("\n".join(lines), flush=True)
