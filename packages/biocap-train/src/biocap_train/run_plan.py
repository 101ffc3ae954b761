"""A run's size (samples, steps, data streams), checked against its data before any model is
built, and where a resumed run's data streams continue."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from biocap_core.shards import count_samples, expand_sources

from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo
from biocap_train.preflight import check_data

#: Config fields that fix the data stream: a resume that changes one cannot continue it
#: exactly.
STREAM_FIELDS = ("train_data", "train_data_upsampling_factors", "dataset_resampled",
                 "train_num_samples", "batch_size", "accum_freq", "workers", "seed",
                 "shuffle_buffer", "text_type", "caption_share", "joint_loss", "captions")


@dataclass
class RunPlan:
    """How many samples, steps and data streams a run has."""

    urls: list[str]
    weights: list[float] | None
    samples_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_streams: int

    def epoch_end(self, step: int) -> int:
        """The step at which the epoch of ``step`` ends (or the run, if sooner)."""
        return min(self.total_steps, (step // self.steps_per_epoch + 1) * self.steps_per_epoch)


def plan_run(cfg: TrainConfig, info: DistInfo) -> RunPlan:
    """Shards, epoch size and step counts; fails before training if the data cannot feed every
    reader or serve the run (:func:`~biocap_train.preflight.check_data`)."""
    urls, weights = expand_sources(cfg.train_data, cfg.train_data_upsampling_factors)
    streams = max(1, cfg.workers)
    if not cfg.dataset_resampled and len(urls) < info.world_size * streams:
        raise ValueError(
            f"--train-data has {len(urls)} shard(s) but {info.world_size} rank(s) x {streams} "
            f"worker stream(s) = {info.world_size * streams} readers each need at least one; use "
            f"--dataset-resampled (shards drawn with replacement), fewer --workers, or split the "
            f"data into more shards"
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


def resume_position(ckpt: dict[str, Any], cfg: TrainConfig, info: DistInfo,
                    say) -> dict[str, Any] | None:
    """This rank's stream position saved in ``ckpt``, or None (saying why) if the run's data
    stream changed since (a :data:`STREAM_FIELDS` option, the world size): it then restarts at the
    epoch position."""
    old = ckpt.get("config", {})
    changed = [f for f in STREAM_FIELDS if f in old and old[f] != getattr(cfg, f)]
    if ckpt.get("world_size", info.world_size) != info.world_size:
        changed.append(f"world size ({ckpt.get('world_size')} -> {info.world_size})")
    states = ckpt.get("data_state") or []
    if changed or len(states) != info.world_size:
        say(f"warning: resuming with changed {changed or ['data state']}: the data stream "
            "restarts at the current epoch position instead of continuing exactly")
        return None
    return states[info.rank]
