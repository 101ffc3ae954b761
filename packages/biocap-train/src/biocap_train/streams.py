"""Deterministic, resumable streams of micro-batches from shards, and the DataLoader that runs them.

Each rank runs ``W = max(1, workers)`` *logical* streams per epoch. Stream ``w`` of rank ``r`` in
epoch ``e`` is a pure function of ``(seed, e, r, w)``: its shard sequence (resampled with
replacement, or the epoch's shuffled shard list split across ranks and workers and repeated), the
raw samples of those shards (:func:`~biocap_train.samples.raw_samples`) and webdataset's shuffle
buffer with a seeded generator. Stream ``w`` produces the epoch's micro-batches ``i`` with
``i % W == w``; the DataLoader's round-robin over workers therefore returns them in order
``0, 1, 2 ...``.

Because a batch knows its index it knows its global step, hence what the step trains on
(:meth:`~biocap_train.schedule.TextSchedule.at`): workers load and tokenize only that text, and
seed the image augmentation with the batch index. Every batch reports how many raw samples its
stream has consumed. To resume mid-epoch a stream discards that many raw samples (tar bytes only,
no JPEG decoding) and physical worker ``p`` takes logical stream ``(p + k) % W`` after ``k``
micro-batches, so the resumed run sees exactly the batches the uninterrupted run would have seen.

Bad data does not stop a stream: an unreadable tar (the rest of that shard), an undecodable image
or a sample without the needed text is skipped and counted in the batches' ``counts``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import webdataset as wds
from biocap_core.errors import BioCAPError
from torch.utils.data import IterableDataset, get_worker_info

from biocap_train.bad_data import DataCounts
from biocap_train.batches import Batch, BatchMaker, StreamCounts
from biocap_train.captions import CaptionIndex
from biocap_train.image_prep import ImagePrep
from biocap_train.samples import raw_samples
from biocap_train.schedule import StepText, TextSchedule, val_text_type


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (the run seed, a purpose and a position in the run)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class StreamSpec:
    """Everything a data worker needs to produce its share of one epoch (picklable)."""

    urls: list[str]
    weights: list[float] | None
    resampled: bool
    batch_size: int
    epoch: int
    rank: int
    world_size: int
    num_streams: int
    microbatches: int
    first_step: int
    accum_freq: int
    prep: ImagePrep
    tokenizer: Callable
    texts: TextSchedule
    captions: CaptionIndex | None = None
    shuffle_buffer: int = 5000
    start: int = 0
    skip: dict[int, int] = field(default_factory=dict)
    counts: dict[int, dict] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.texts.seed

    def step_text(self, index: int) -> StepText:
        """What the step of micro-batch ``index`` trains on."""
        return self.texts.at(self.first_step + index // self.accum_freq)


class TrainStream(IterableDataset):
    """One rank's training batches for one epoch (see the module docstring)."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec

    def shard_urls(self, stream: int) -> Iterator[str]:
        s = self.spec
        if s.resampled:
            rng = random.Random(seed_of(s.seed, "shards", s.epoch, s.rank, stream))
            while True:
                yield rng.choices(s.urls, weights=s.weights, k=1)[0]
        readers = s.world_size * s.num_streams
        position = s.rank * s.num_streams + stream
        n_pass = 0
        while True:  # repeat this reader's shards until the epoch has all its batches
            order = list(s.urls)
            random.Random(seed_of(s.seed, "order", s.epoch, n_pass)).shuffle(order)
            yield from order[position::readers]
            n_pass += 1

    def __iter__(self) -> Iterator[Batch | WorkerError]:
        return carry_errors(self._batches())

    def _batches(self) -> Iterator[Batch]:
        s = self.spec
        info = get_worker_info()
        physical = info.id if info is not None else 0
        stream = (physical + s.start) % s.num_streams
        indices = range(s.start + (stream - s.start) % s.num_streams, s.microbatches, s.num_streams)
        if not indices:
            return
        counts = DataCounts.from_dict(s.counts.get(stream))
        raw = raw_samples(self.shard_urls(stream), counts, max(100, 2 * len(s.urls)))
        rng = random.Random(seed_of(s.seed, "shuffle", s.epoch, s.rank, stream))
        # webdataset's public shuffle filter with our own generator: its detshuffle seeds from
        # seed + epoch only, but each (rank, stream) needs its own order, fixed by the seed, to
        # resume exactly.
        shuffled = wds.shuffle(bufsize=s.shuffle_buffer, initial=max(1, s.shuffle_buffer // 5),
                               rng=rng)(raw)
        consumed = 0
        for _ in range(s.skip.get(stream, 0)):
            next(shuffled)
            consumed += 1
        maker = BatchMaker(s.prep, s.tokenizer, s.captions, counts)
        for index in indices:
            step_text = s.step_text(index)
            examples, keys = [], []
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_of(s.seed, "augment", s.epoch, s.rank, index))
                while len(examples) < s.batch_size:
                    sample = next(shuffled)
                    consumed += 1
                    example = maker.example(sample, step_text.members)
                    if example is not None:
                        examples.append(example)
                        keys.append(sample["__key__"])
            yield maker.collate(examples, keys, step_text, index=index, stream=stream,
                                consumed=consumed, counts=counts.as_dict())


class ValStream(IterableDataset):
    """Validation batches: every sample once, with a taxonomic text and the caption.

    Each batch carries its worker's skipped-sample counts so far (``counts``, ``stream``); a worker
    whose last samples were all skipped ends with a :class:`StreamCounts` alone."""

    def __init__(self, urls: list[str], batch_size: int, seed: int, prep: ImagePrep, tokenizer,
                 captions: CaptionIndex | None = None):
        super().__init__()
        self.urls, self.batch_size, self.seed = urls, batch_size, seed
        self.prep, self.tokenizer, self.captions = prep, tokenizer, captions

    def __iter__(self) -> Iterator[StreamCounts | WorkerError]:
        return carry_errors(self._batches())

    def _batches(self) -> Iterator[StreamCounts]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counts = DataCounts()
        maker = BatchMaker(self.prep, self.tokenizer, self.captions, counts)
        raw = raw_samples(iter(self.urls[worker::n_workers]), counts, len(self.urls) + 1)
        n_batch, examples, keys = 0, [], []
        step_text = StepText(val_text_type(worker, self.seed), joint=True)
        for sample in raw:
            example = maker.example(sample, step_text.members)
            if example is not None:
                examples.append(example)
                keys.append(sample["__key__"])
            if len(examples) == self.batch_size:
                yield maker.collate(examples, keys, step_text, counts=counts.as_dict(),
                                    stream=worker)
                n_batch, examples, keys = n_batch + 1, [], []
                step_text = StepText(val_text_type(n_batch * n_workers + worker, self.seed), True)
        if examples:
            yield maker.collate(examples, keys, step_text, counts=counts.as_dict(), stream=worker)
        elif counts.counts:
            yield StreamCounts(counts=counts.as_dict(), stream=worker)


@dataclass
class WorkerError:
    """A data error (:class:`BioCAPError`) raised while a stream made its batches, handed over in
    the batches' place so that :func:`loader` raises the error itself. Raised in a worker process,
    the DataLoader would re-raise it as a new exception whose message is the worker's whole
    traceback, which the CLI would print instead of one line saying what is wrong."""

    error: BioCAPError


def carry_errors(batches: Iterator) -> Iterator:
    """``batches``, ending with a :class:`WorkerError` if making them raised a data error."""
    try:
        yield from batches
    except BioCAPError as exc:
        yield WorkerError(exc)


def loader(dataset: IterableDataset, workers: int, pin_memory: bool = False) -> Iterator[Any]:
    """The batches of a stream through a DataLoader; a data error in a stream is raised as itself
    (see :class:`WorkerError`), other exceptions (bugs) with the DataLoader's traceback."""
    batches = wds.WebLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                            persistent_workers=False, pin_memory=pin_memory,
                            prefetch_factor=4 if workers else None)
    for item in batches:
        if isinstance(item, WorkerError):
            raise item.error
        yield item
