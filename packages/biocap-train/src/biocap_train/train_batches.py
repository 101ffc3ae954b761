"""One rank's training batches, step by step, on its device, and where its streams stand: what the
trainer iterates and what a checkpoint saves per rank."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from biocap_core.precision import input_dtype

from biocap_train import distributed
from biocap_train.bad_data import DataCounts
from biocap_train.batches import Batch
from biocap_train.captions import CaptionIndex
from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo
from biocap_train.image_prep import image_prep
from biocap_train.run_plan import RunPlan
from biocap_train.schedule import TextSchedule
from biocap_train.streams import StreamSpec, TrainStream, loader


class TrainBatches:
    """One rank's training batches, step by step, and where its streams stand.

    :meth:`steps` starts the epoch's :class:`~biocap_train.streams.TrainStream` and yields each
    step's micro-batches in order, their images ready on the rank's device. :attr:`position` (the
    epoch, micro-batches done, each stream's consumed samples and bad-sample counts) is what a
    checkpoint saves per rank; given back as ``restored``, the streams continue exactly there.
    """

    def __init__(self, cfg: TrainConfig, plan: RunPlan, info: DistInfo, model,
                 captions: CaptionIndex | None, restored: dict[str, Any] | None, say):
        self.cfg, self.plan, self.info, self.captions = cfg, plan, info, captions
        self.restored, self.say = restored, say
        self.prep, self.tokenizer = image_prep(cfg, model, train=True), model.tokenizer()
        self.dtype = input_dtype(cfg.precision)
        self.texts = TextSchedule(cfg.seed, cfg.text_type, cfg.caption_share, cfg.joint_loss)
        # A stream restarts every epoch and its shuffle buffer reads ahead while it fills; cap the
        # buffer at half of what one stream yields per epoch so small data sets are not read 2-3
        # times.
        per_stream = -(-plan.steps_per_epoch * cfg.accum_freq // plan.num_streams)
        self.shuffle_buffer = max(1, min(cfg.shuffle_buffer, per_stream * cfg.batch_size // 2))
        self.position: dict[str, Any] = {}
        self._device_skips: dict[int, DataCounts] = {}  # per stream: images the device failed

    def steps(self, start: int, end: int) -> Iterator[list[Batch]]:
        """The micro-batches of each step from ``start`` to ``end`` (exclusive), all in one
        epoch."""
        cfg, plan = self.cfg, self.plan
        epoch = start // plan.steps_per_epoch
        first = epoch * plan.steps_per_epoch
        streams = self._restored_streams(epoch, start, done=(start - first) * cfg.accum_freq)
        spec = StreamSpec(
            urls=plan.urls, weights=plan.weights, resampled=cfg.dataset_resampled,
            batch_size=cfg.batch_size, epoch=epoch, rank=self.info.rank,
            world_size=self.info.world_size, num_streams=plan.num_streams,
            microbatches=plan.steps_per_epoch * cfg.accum_freq, first_step=first,
            accum_freq=cfg.accum_freq, prep=self.prep, tokenizer=self.tokenizer, texts=self.texts,
            captions=self.captions, shuffle_buffer=self.shuffle_buffer,
            start=(start - first) * cfg.accum_freq,
            skip={int(w): s["consumed"] for w, s in streams.items()},
            counts={int(w): s["counts"] for w, s in streams.items()},
        )
        self.position = {"epoch": epoch, "microbatches": spec.start,
                         "streams": {int(w): dict(s) for w, s in streams.items()}}
        self._device_skips = {}
        pin = self.info.device.type == "cuda"
        batches = iter(loader(TrainStream(spec), cfg.workers, pin_memory=pin))
        for _ in range(start, end):
            yield [self._advance(self._on_device(next(batches))) for _ in range(cfg.accum_freq)]

    def _restored_streams(self, epoch: int, step: int, done: int) -> dict:
        """The saved streams of this point of the epoch; none (fresh streams, said) if the save was
        elsewhere."""
        saved = self.restored
        if saved and saved.get("epoch") == epoch and saved.get("microbatches") == done:
            return saved.get("streams", {})
        if done:
            self.say(f"warning: no stream position for step {step}; epoch {epoch} continues with "
                     "fresh streams (not bit-identical to an uninterrupted run)")
        return {}

    def _on_device(self, batch: Batch) -> Batch:
        """The batch's images made ready on this rank's device (:meth:`Batch.prepare_images`); an
        image that fails there is dropped and counted with its stream's skips."""
        for detail in batch.prepare_images(self.prep, self.info.device, self.dtype):
            self._device_skips.setdefault(batch.stream, DataCounts()).add("corrupt_image", detail)
        if self.info.enabled and self.cfg.gpu_decode:
            # ClipLoss gathers equal-sized batches from every rank: if one rank dropped a sample,
            # all train on the smallest size (one scalar all-reduce per micro-batch, only where the
            # device decodes, the one place a sample can be dropped after the workers)
            size = distributed.min_int(self.info, len(batch.image))
            if size < len(batch.image):
                batch.image = batch.image[:size]
                batch.keep_texts(range(size))
        return batch

    def _advance(self, batch: Batch) -> Batch:
        """Check that ``batch`` is the next micro-batch and move the position past it."""
        if batch.index != self.position["microbatches"]:
            raise RuntimeError(f"data stream out of order: got micro-batch {batch.index}, "
                               f"expected {self.position['microbatches']}")
        self.position["microbatches"] += 1
        counts, stream = batch.counts, batch.stream
        if stream in self._device_skips:  # the workers' counts lack what failed on the device
            counts = DataCounts.merge([counts, self._device_skips[stream]]).as_dict()
        self.position["streams"][stream] = {"consumed": batch.consumed, "counts": counts}
        return batch

    def problems(self) -> DataCounts:
        """The bad samples the epoch's streams met so far, over every rank (every rank must call
        it)."""
        gathered = distributed.gather_objects(self.info, self.position["streams"])
        return DataCounts.merge(s["counts"] for per_rank in gathered for s in per_rank.values())
