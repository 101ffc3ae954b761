"""The shard pipeline: deterministic, resumable streams of ready-made batches from webdataset shards.

Each rank runs ``W = max(1, workers)`` *logical* streams per epoch. Stream
``w`` of rank ``r`` in epoch ``e`` is a pure function of ``(seed, e, r, w)``:
its shard sequence (resampled with replacement, or the epoch's shuffled shard
list split across ranks and workers and repeated), biocap-core's shard reader
(:func:`biocap_core.shards.iter_samples`) and webdataset's shuffle buffer with a
seeded generator. Stream ``w`` produces the epoch's
micro-batches ``i`` with ``i % W == w``; the DataLoader's round-robin over
workers therefore returns them in order ``0, 1, 2 ...``.

Because a batch knows its index it knows its global step, hence its text type
(:func:`~biocap_train.schedule.text_type_for_step`): workers load and tokenize
only the text that step trains on, and seed the image augmentation with the
batch index. Every batch reports how many raw samples its stream has consumed.
To resume mid-epoch a stream discards that many raw samples (tar bytes only,
no JPEG decoding) and physical worker ``p`` takes logical stream
``(p + k) % W`` after ``k`` micro-batches, so the resumed run sees exactly
the batches the uninterrupted run would have seen.

Bad data does not stop the stream: an unreadable tar (the rest of that shard),
an undecodable image or a sample without the needed text is skipped and
counted; the trainer reports the counts at the end of each epoch. Data that
can never serve a step must not spin forever either: :func:`preflight` reads
the first samples of every source before training and refuses text types they
do not carry, and :data:`MAX_UNUSABLE_IN_A_ROW` skipped samples in a row stop
the stream with :class:`DataUnusable`, saying what is missing.

With ``--gpu-decode`` the workers hand over JPEG bytes and train crops
(:class:`~biocap_core.gpu_decode.DevicePreprocess`, drawn from the same seeded
RNG, so the batches and exact resume are unchanged) and :class:`TrainBatches`
decodes each micro-batch on the device before handing it to the trainer; a JPEG
that only the device finds corrupt drops its sample and is counted there.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import webdataset as wds
from biocap_core.errors import BioCAPError, ShardError
from biocap_core.gpu_decode import DevicePreprocess, EncodedBatch
from biocap_core.precision import input_dtype
from biocap_core.preprocess import decode_image, image_transform, short_side
from biocap_core.shards import count_samples, expand_sources, iter_samples, member_key
from biocap_core.taxonomy import TRAIN_TAXONOMIC_TYPES
from torch.utils.data import IterableDataset, get_worker_info

from biocap_train import distributed
from biocap_train.captions import CaptionIndex
from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo
from biocap_train.schedule import text_type_for_step, text_types_of_run, val_text_type

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
#: Examples of each problem kept for the epoch report.
_MAX_EXAMPLES = 3
#: Skipped samples in a row after which a stream gives up. Without a bound, data that lacks the step's
#: text (TreeOfLife-10M shards have no caption.txt) or whose images all fail to decode makes a worker loop
#: forever at full CPU with nothing printed. Large enough that a gap in a partial --captions table or a
#: run of bad images in otherwise good shards does not stop a run; it takes seconds to reach.
MAX_UNUSABLE_IN_A_ROW = 10_000
#: What to do when shards have no caption.txt, as both the pre-flight check and a stream that gives up say.
CAPTIONS_FIX = ("pass --captions TABLE.parquet (uuid, caption), or train the taxonomic head only (a taxonomic "
                "--text-type such as taxon_com, or --caption-share 0; no --joint-loss)")
#: Samples of each source that the pre-flight check reads.
PREFLIGHT_SAMPLES = 64
#: Config fields that fix the data stream; a resume that changes one cannot continue it exactly.
STREAM_FIELDS = ("train_data", "train_data_upsampling_factors", "dataset_resampled", "train_num_samples",
                 "batch_size", "accum_freq", "workers", "seed", "shuffle_buffer", "text_type",
                 "caption_share", "joint_loss", "captions")


class DataUnusable(BioCAPError, ValueError):
    """The data cannot serve the run as configured (a text member missing everywhere, no decodable image)."""


@dataclass
class DataCounts:
    """Problems met by one stream: counts per kind and a few examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < _MAX_EXAMPLES:
            kept.append(detail[:300])

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataCounts:
        data = data or {}
        return cls(Counter(data.get("counts", {})), {k: list(v) for k, v in data.get("examples", {}).items()})

    @staticmethod
    def merge(items) -> DataCounts:
        out = DataCounts()
        for item in items:
            item = item if isinstance(item, DataCounts) else DataCounts.from_dict(item)
            out.counts.update(item.counts)
            for kind, examples in item.examples.items():
                kept = out.examples.setdefault(kind, [])
                kept += examples[:_MAX_EXAMPLES - len(kept)]
        return out

    def summary(self) -> str:
        if not self.counts:
            return "no bad samples"
        names = {"corrupt_image": "undecodable image", "no_image": "no image", "no_text": "no text",
                 "tar_error": "unreadable tar data (rest of shard skipped)"}
        parts = [f"{names.get(k, k)}: {n}" for k, n in sorted(self.counts.items())]
        lines = [", ".join(parts)]
        for kind, examples in sorted(self.examples.items()):
            lines += [f"    e.g. {names.get(kind, kind)}: {e}" for e in examples]
        return "\n".join(lines)


def _seed_of(*parts: Any) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _raw_samples(urls: Iterator[str], counts: DataCounts, limit_empty: int) -> Iterator[dict]:
    """Raw samples (bytes per member) of a shard sequence; unreadable data is counted and the rest
    of that shard skipped. Reads through biocap-core's shard reader, :func:`~biocap_core.shards.iter_samples`."""
    empty_shards = 0
    for url in urls:
        produced = False
        try:
            for sample in iter_samples(url):
                produced, empty_shards = True, 0
                yield sample
        except (ShardError, OSError) as exc:
            counts.add("tar_error", f"{exc} ({type(exc).__name__})")
        if not produced:
            empty_shards += 1
            if empty_shards >= limit_empty:
                raise ShardError(f"{limit_empty} shards in a row gave no sample (last: {url}); "
                                 "are the shards readable webdataset tar files?")


def describe_shards(urls) -> str:
    """A short name for a set of shards: ``a.tar``, ``a.tar and b.tar`` or ``dir/a.tar..z.tar (N shards)``."""
    urls = sorted(urls)
    if len(urls) <= 2:
        return " and ".join(urls)
    return f"{urls[0]}..{urls[-1].rsplit('/', 1)[-1]} ({len(urls)} shards)"


def preflight(urls: list[str], candidates: tuple[str, ...]) -> tuple[str, set[str]]:
    """Read the first :data:`PREFLIGHT_SAMPLES` samples of one source (its first readable shard) before
    training: (a description of them, the ``candidates`` text types at least one of them carries).

    The caller refuses a run whose steps need a text type they lack; otherwise the stream would skip every
    sample of those steps. Raises :class:`DataUnusable` if nothing can be read or no image decodes.
    """
    samples, errors, tried = [], [], urls[:3]
    for url in tried:
        try:
            for sample in iter_samples(url):
                samples.append(sample)
                if len(samples) == PREFLIGHT_SAMPLES:
                    break
        except (ShardError, OSError) as exc:
            errors.append(f"{exc} ({type(exc).__name__})")
        if samples:
            break
    if not samples:
        why = errors[0] if errors else "they hold no samples"
        if len(errors) > 1:
            why += f" (and {len(errors) - 1} more error(s) like it)"
        raise DataUnusable(f"no sample could be read from {describe_shards(tried)}: {why}")
    where = f"the first {len(samples)} samples of {samples[0]['__url__']}"

    def decodes(sample: dict) -> bool:
        data = _image_bytes(sample)
        if data is None:
            return False
        try:
            decode_image(data)
        except Exception:  # PIL raises many types for bad bytes
            return False
        return True

    if not any(decodes(s) for s in samples):
        raise DataUnusable(f"none of {where} has a decodable image ({'/'.join(IMAGE_MEMBERS)} member)")
    return where, {t for t in candidates if any(sample_text(s, t, None) for s in samples)}


def check_data(cfg: TrainConfig) -> None:
    """Refuse, before any model is built, a run that the data cannot serve: a text type that the first
    samples of a source lack (TreeOfLife-10M shards have no caption.txt) would make the data workers skip
    every sample of those steps, and validation would fail only after the first epoch."""
    needs = [t for t in text_types_of_run(cfg.text_type, cfg.caption_share, cfg.joint_loss)
             if not (t == "caption" and cfg.captions)]
    for urls in _sources(cfg.train_data):
        where, carried = _preflight(urls, tuple(needs), "--train-data")
        missing = [t for t in needs if t not in carried]
        if "caption" in missing:
            need = "--joint-loss" if cfg.joint_loss else f"--text-type {cfg.text_type}"
            if cfg.text_type == "random" and not cfg.joint_loss:
                need += f" (its caption steps, --caption-share {cfg.caption_share:.3g})"
            raise DataUnusable(
                f"--train-data: none of {where} has caption.txt, which {need} needs: " + CAPTIONS_FIX)
        if missing:
            have = sorted(t for t in carried if t != "caption")
            raise DataUnusable(
                f"--train-data: none of {where} has {', '.join(t + '.txt' for t in missing)}, which --text-type "
                f"{cfg.text_type} trains on; "
                + (f"they have {', '.join(have)}: use one of those as --text-type" if have
                   else "these are not TreeOfLife shards with taxonomic texts"))
    if cfg.val_data:
        needs = TRAIN_TAXONOMIC_TYPES + (() if cfg.captions else ("caption",))
        for urls in _sources(cfg.val_data):
            where, carried = _preflight(urls, needs, "--val-data")
            missing = [t for t in needs if t not in carried]
            if missing:
                fix = ("pass --captions TABLE.parquet with their captions, or leave out --val-data"
                       if "caption" in missing else "leave out --val-data")
                raise DataUnusable(
                    f"--val-data: none of {where} has {', '.join(t + '.txt' for t in missing)}; validation "
                    f"scores the caption and every taxonomic text type: {fix}")


def _sources(spec: str) -> list[list[str]]:
    """The shard lists of the '::'-joined sources of ``spec``: each source may differ in its members."""
    return [expand_sources(source)[0] for source in spec.split("::") if source.strip()]


def _preflight(urls: list[str], needs: tuple[str, ...], flag: str) -> tuple[str, set[str]]:
    try:
        return preflight(urls, needs)
    except DataUnusable as exc:
        raise DataUnusable(f"{flag}: {exc}") from None


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


@dataclass
class StreamSpec:
    """Everything a data worker needs to produce its share of one epoch (picklable)."""

    urls: list[str]
    weights: list[float] | None
    resampled: bool
    batch_size: int
    seed: int
    epoch: int
    rank: int
    world_size: int
    num_streams: int
    microbatches: int
    first_step: int
    accum_freq: int
    #: core's image transform, or with --gpu-decode its DevicePreprocess (see :func:`image_prep`)
    transform: Callable | DevicePreprocess
    tokenizer: Callable
    text_type: str = "random"
    caption_share: float = 1 / 6
    joint: bool = False
    captions: CaptionIndex | None = None
    draft_size: int | None = None
    shuffle_buffer: int = 5000
    start: int = 0
    skip: dict[int, int] = field(default_factory=dict)
    counts: dict[int, dict] = field(default_factory=dict)

    def text_type_of(self, index: int) -> str:
        step = self.first_step + index // self.accum_freq
        return text_type_for_step(step, self.seed, self.text_type, self.caption_share, self.joint)


def sample_text(sample: dict, text_type: str, captions: CaptionIndex | None) -> str | None:
    """The text of ``text_type`` for a raw sample (captions from the index when one is given)."""
    if text_type == "caption" and captions is not None:
        text = captions.get(sample["__key__"])
    else:
        data = sample.get(member_key(f"{text_type}.txt"))
        text = data.decode("utf-8", errors="replace") if data is not None else None
    return text if text and text.strip() else None


def _image_bytes(sample: dict) -> bytes | None:
    for ext in IMAGE_MEMBERS:
        if ext in sample:
            return sample[ext]
    return None


class BatchMaker:
    """Turns raw samples into a batch: decode, augment, tokenize; skips and counts bad samples, and gives
    up with :class:`DataUnusable` after :data:`MAX_UNUSABLE_IN_A_ROW` skipped samples in a row."""

    def __init__(self, transform, tokenizer, captions, draft_size, counts: DataCounts):
        self.transform, self.tokenizer, self.captions = transform, tokenizer, captions
        self.draft_size, self.counts = draft_size, counts
        self._run: Counter = Counter()  # (kind, text type) of the skipped samples since the last usable one
        self._run_shards: set[str] = set()
        self._run_example = ""

    def example(self, sample: dict, text_types: tuple[str, ...]):
        """(image tensor, texts) of one sample, or None if it must be skipped."""
        key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        texts = [sample_text(sample, t, self.captions) for t in text_types]
        if any(t is None for t in texts):
            missing = [tt for tt, t in zip(text_types, texts) if t is None]
            return self._skip(sample, "no_text", f"{key} has no {missing[0]} text", missing[0])
        data = _image_bytes(sample)
        if data is None:
            return self._skip(sample, "no_image", f"{key} has no image member")
        try:
            if isinstance(self.transform, DevicePreprocess):  # --gpu-decode: JPEG bytes and crop box
                image = self.transform.encode(data)
            else:
                image = self.transform(decode_image(data, draft_size=self.draft_size))
        except Exception as exc:  # PIL raises many types for bad bytes
            return self._skip(sample, "corrupt_image", f"{key}: {type(exc).__name__}: {exc}")
        self._run.clear()
        self._run_shards.clear()
        return image, texts

    def _skip(self, sample: dict, kind: str, detail: str, text_type: str | None = None) -> None:
        self.counts.add(kind, detail)
        if not self._run:
            self._run_example = detail[:300]
        self._run[kind, text_type] += 1
        self._run_shards.add(sample.get("__url__", "?"))
        if self._run.total() >= MAX_UNUSABLE_IN_A_ROW:
            raise DataUnusable(self._explain())
        return None

    def _explain(self) -> str:
        """What the skipped run of samples lacked, and how to fix it."""
        (kind, text_type), _ = self._run.most_common(1)[0]
        where = describe_shards(self._run_shards)
        head = f"{MAX_UNUSABLE_IN_A_ROW} samples in a row could not be used, so no batch can be made: "
        if kind == "no_text" and text_type == "caption" and self.captions is not None:
            return head + (f"no sample read from {where} has a caption in the --captions table "
                           f"{self.captions.meta.get('source')}; its uuid column must hold the shards' sample keys "
                           f"(e.g. {self._run_example})")
        if kind == "no_text" and text_type == "caption":
            return head + f"no sample read from {where} has caption.txt: " + CAPTIONS_FIX
        if kind == "no_text":
            return head + f"no sample read from {where} has {text_type}.txt: choose a --text-type these shards carry"
        if kind == "no_image":
            return head + f"no sample read from {where} has an image member ({'/'.join(IMAGE_MEMBERS)})"
        return head + f"no image read from {where} could be decoded (e.g. {self._run_example})"

    def collate(self, examples: list, text_types: tuple[str, ...]) -> dict[str, Any]:
        images = [e[0] for e in examples]
        batch = {"image": self.transform.collate(images) if isinstance(self.transform, DevicePreprocess)
                 else torch.stack(images)}
        for j, name in enumerate(("text", "caption_text")[:len(text_types)]):
            batch[name] = self.tokenizer([e[1][j] for e in examples])
        return batch


class TrainStream(IterableDataset):
    """One rank's training batches for one epoch (see the module docstring)."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec

    def shard_urls(self, stream: int) -> Iterator[str]:
        s = self.spec
        if s.resampled:
            rng = random.Random(_seed_of(s.seed, "shards", s.epoch, s.rank, stream))
            while True:
                yield rng.choices(s.urls, weights=s.weights, k=1)[0]
        readers = s.world_size * s.num_streams
        position = s.rank * s.num_streams + stream
        n_pass = 0
        while True:  # repeat this reader's shards until the epoch has all its batches
            order = list(s.urls)
            random.Random(_seed_of(s.seed, "order", s.epoch, n_pass)).shuffle(order)
            yield from order[position::readers]
            n_pass += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s = self.spec
        info = get_worker_info()
        physical = info.id if info is not None else 0
        stream = (physical + s.start) % s.num_streams
        indices = range(s.start + (stream - s.start) % s.num_streams, s.microbatches, s.num_streams)
        if not indices:
            return
        counts = DataCounts.from_dict(s.counts.get(stream))
        limit = max(100, 2 * len(s.urls))
        raw = _raw_samples(self.shard_urls(stream), counts, limit)
        rng = random.Random(_seed_of(s.seed, "shuffle", s.epoch, s.rank, stream))
        # webdataset's public shuffle filter with our own generator: its detshuffle seeds from seed + epoch
        # only, but each (rank, stream) needs its own order, fixed by the seed, to resume exactly.
        shuffled = wds.shuffle(bufsize=s.shuffle_buffer, initial=max(1, s.shuffle_buffer // 5), rng=rng)(raw)
        consumed = 0
        for _ in range(s.skip.get(stream, 0)):
            next(shuffled)
            consumed += 1
        maker = BatchMaker(s.transform, s.tokenizer, s.captions, s.draft_size, counts)
        for index in indices:
            text_type = s.text_type_of(index)
            text_types = (text_type, "caption") if s.joint else (text_type,)
            examples, keys = [], []
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed_of(s.seed, "augment", s.epoch, s.rank, index))
                while len(examples) < s.batch_size:
                    sample = next(shuffled)
                    consumed += 1
                    example = maker.example(sample, text_types)
                    if example is not None:
                        examples.append(example)
                        keys.append(sample["__key__"])
            batch = maker.collate(examples, text_types)
            batch.update(index=index, stream=stream, text_type=text_type, consumed=consumed, keys=keys,
                         counts=counts.as_dict())
            yield batch


class ValStream(IterableDataset):
    """Validation batches: every sample once, with a taxonomic text and the caption.

    Each batch carries its worker's skipped-sample counts so far (``counts``, ``worker``); a worker whose
    last samples were all skipped ends with a record of only those two, so no skipped sample goes unreported.
    """

    def __init__(self, urls: list[str], batch_size: int, seed: int, transform, tokenizer,
                 captions: CaptionIndex | None = None, draft_size: int | None = None):
        super().__init__()
        self.urls, self.batch_size, self.seed = urls, batch_size, seed
        self.transform, self.tokenizer, self.captions, self.draft_size = transform, tokenizer, captions, draft_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counts = DataCounts()
        maker = BatchMaker(self.transform, self.tokenizer, self.captions, self.draft_size, counts)
        raw = _raw_samples(iter(self.urls[worker::n_workers]), counts, limit_empty=len(self.urls) + 1)
        n_batch, examples = 0, []
        text_type = val_text_type(worker, self.seed)
        for sample in raw:
            example = maker.example(sample, (text_type, "caption"))
            if example is not None:
                examples.append(example)
            if len(examples) == self.batch_size:
                yield {**maker.collate(examples, (text_type, "caption")), "text_type": text_type,
                       "counts": counts.as_dict(), "worker": worker}
                n_batch, examples = n_batch + 1, []
                text_type = val_text_type(n_batch * n_workers + worker, self.seed)
        if examples:
            yield {**maker.collate(examples, (text_type, "caption")), "text_type": text_type,
                   "counts": counts.as_dict(), "worker": worker}
        elif counts.counts:
            yield {"counts": counts.as_dict(), "worker": worker}


def image_prep(cfg: TrainConfig, model, train: bool) -> Callable | DevicePreprocess:
    """What the data workers apply to each image: core's transform (decoded in the worker), or with
    ``--gpu-decode`` the same transform split at the JPEG bytes, finished by :func:`decode_on_device`."""
    return DevicePreprocess(model, train=train) if cfg.gpu_decode else image_transform(model, train=train)


def decode_on_device(batch: dict[str, Any], prep: DevicePreprocess, device: torch.device,
                     dtype: torch.dtype) -> list[str]:
    """Replace ``batch["image"]`` (an :class:`EncodedBatch`) by its pixels decoded on ``device``, in place;
    returns why any sample failed there.

    A JPEG whose header and end marker look right can still be corrupt inside, and only the device's
    decode finds it. One such file must not stop a run: its sample (image, texts, key) is dropped from
    the batch, and the caller counts the reason as the workers count an undecodable image."""
    images, kept, failed = prep.apply(batch["image"], device, dtype)
    names = batch.get("keys")
    reasons = [f"{names[i] if names else f'sample {i} of a batch'} (on the device): {why}" for i, why in failed]
    if images is None:
        raise DataUnusable(f"no image of a batch of {len(failed)} could be decoded on the device "
                           f"(e.g. {reasons[0]})")
    batch["image"] = images
    if failed:
        _keep_texts(batch, kept)
    return reasons


def _keep_texts(batch: dict[str, Any], positions) -> None:
    """Keep the texts and keys of the samples at ``positions`` only (the caller has cut the images)."""
    positions = list(positions)
    for name in ("text", "caption_text"):
        if name in batch:
            batch[name] = batch[name][positions]
    if "keys" in batch:
        batch["keys"] = [batch["keys"][i] for i in positions]


def draft_size(cfg: TrainConfig, model) -> int | None:
    """The size JPEGs are draft-decoded to (the model's crop), or None with ``--no-draft-decode``."""
    return short_side(model.image_size) if cfg.draft_decode else None


def resume_position(ckpt: dict[str, Any], cfg: TrainConfig, info: DistInfo, say) -> dict[str, Any] | None:
    """This rank's stream position saved in ``ckpt``, or None (saying why) if the run's data stream
    changed since (a :data:`STREAM_FIELDS` option, the world size): it then restarts at the epoch position."""
    old = ckpt.get("config", {})
    changed = [f for f in STREAM_FIELDS if f in old and old[f] != getattr(cfg, f)]
    if ckpt.get("world_size", info.world_size) != info.world_size:
        changed.append(f"world size ({ckpt.get('world_size')} -> {info.world_size})")
    states = ckpt.get("data_state") or []
    if changed or len(states) != info.world_size:
        say(f"warning: resuming with changed {changed or ['data state']}: the data stream restarts at the "
            "current epoch position instead of continuing exactly")
        return None
    return states[info.rank]


class TrainBatches:
    """One rank's training batches, step by step, and where its streams stand.

    :meth:`steps` starts the epoch's :class:`TrainStream` and yields each step's micro-batches in order.
    :attr:`position` (the epoch, micro-batches done, each stream's consumed samples and bad-sample counts)
    is what a checkpoint saves per rank; given back as ``restored``, the streams continue exactly there.
    """

    def __init__(self, cfg: TrainConfig, plan: RunPlan, info: DistInfo, model, captions: CaptionIndex | None,
                 restored: dict[str, Any] | None, say):
        self.cfg, self.plan, self.info, self.captions, self.restored, self.say = cfg, plan, info, captions, restored, say
        self.transform, self.tokenizer = image_prep(cfg, model, train=True), model.tokenizer()
        self.draft_size, self.dtype = draft_size(cfg, model), input_dtype(cfg.precision)
        # A stream restarts every epoch and its shuffle buffer reads ahead while it fills; cap the buffer
        # at half of what one stream yields per epoch so small data sets are not read 2-3 times.
        stream_samples = -(-plan.steps_per_epoch * cfg.accum_freq // plan.num_streams) * cfg.batch_size
        self.shuffle_buffer = max(1, min(cfg.shuffle_buffer, stream_samples // 2))
        self.position: dict[str, Any] = {}
        self._device_skips: dict[int, DataCounts] = {}  # per stream: JPEGs that failed on the device

    def steps(self, start: int, end: int) -> Iterator[list[dict[str, Any]]]:
        """The micro-batches of each step from ``start`` to ``end`` (exclusive), all in one epoch."""
        cfg, plan = self.cfg, self.plan
        epoch = start // plan.steps_per_epoch
        first = epoch * plan.steps_per_epoch
        streams = self._restored_streams(epoch, start, done=(start - first) * cfg.accum_freq)
        spec = StreamSpec(
            urls=plan.urls, weights=plan.weights, resampled=cfg.dataset_resampled, batch_size=cfg.batch_size,
            seed=cfg.seed, epoch=epoch, rank=self.info.rank, world_size=self.info.world_size,
            num_streams=plan.num_streams, microbatches=plan.steps_per_epoch * cfg.accum_freq, first_step=first,
            accum_freq=cfg.accum_freq, transform=self.transform, tokenizer=self.tokenizer,
            text_type=cfg.text_type, caption_share=cfg.caption_share, joint=cfg.joint_loss,
            captions=self.captions, draft_size=self.draft_size, shuffle_buffer=self.shuffle_buffer,
            start=(start - first) * cfg.accum_freq, skip={int(w): s["consumed"] for w, s in streams.items()},
            counts={int(w): s["counts"] for w, s in streams.items()},
        )
        self.position = {"epoch": epoch, "microbatches": spec.start,
                         "streams": {int(w): dict(s) for w, s in streams.items()}}
        self._device_skips = {}
        batches = iter(loader(TrainStream(spec), cfg.workers, pin_memory=self.info.device.type == "cuda"))
        for _ in range(start, end):
            yield [self._advance(self._on_device(next(batches))) for _ in range(cfg.accum_freq)]

    def _restored_streams(self, epoch: int, step: int, done: int) -> dict:
        """The saved streams of this point of the epoch; none (fresh streams, said) if the save was elsewhere."""
        saved = self.restored
        if saved and saved.get("epoch") == epoch and saved.get("microbatches") == done:
            return saved.get("streams", {})
        if done:
            self.say(f"warning: no stream position for step {step}; epoch {epoch} continues with fresh "
                     "streams (not bit-identical to an uninterrupted run)")
        return {}

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """With ``--gpu-decode``, the batch decoded on this rank's device (see :func:`decode_on_device`)."""
        if not isinstance(batch["image"], EncodedBatch):
            return batch
        for detail in decode_on_device(batch, self.transform, self.info.device, self.dtype):
            self._device_skips.setdefault(batch["stream"], DataCounts()).add("corrupt_image", detail)
        if self.info.enabled:
            # ClipLoss gathers equal-sized batches from every rank: if one rank dropped a sample, all
            # train on the smallest size (one scalar all-reduce per micro-batch, only with --gpu-decode)
            size = distributed.min_int(self.info, len(batch["image"]))
            if size < len(batch["image"]):
                batch["image"] = batch["image"][:size]
                _keep_texts(batch, range(size))
        return batch

    def _advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Check that ``batch`` is the next micro-batch and move the position past it."""
        if batch["index"] != self.position["microbatches"]:
            raise RuntimeError(f"data stream out of order: got micro-batch {batch['index']}, "
                               f"expected {self.position['microbatches']}")
        self.position["microbatches"] += 1
        counts, stream = batch["counts"], batch["stream"]
        if stream in self._device_skips:  # the workers' counts do not include what failed on the device
            counts = DataCounts.merge([counts, self._device_skips[stream]]).as_dict()
        self.position["streams"][stream] = {"consumed": batch["consumed"], "counts": counts}
        return batch

    def problems(self) -> DataCounts:
        """The bad samples the epoch's streams met so far, over every rank (every rank must call it)."""
        gathered = distributed.gather_objects(self.info, self.position["streams"])
        return DataCounts.merge(s["counts"] for per_rank in gathered for s in per_rank.values())


def loader(dataset: IterableDataset, workers: int, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """The batches of a stream through a DataLoader.

    A data error (:class:`BioCAPError`) raised in a worker process comes out with its own message: the
    DataLoader re-raises it with the worker's whole traceback prepended, which the CLI would print instead
    of one line saying what is wrong. Other exceptions (bugs) keep the traceback.
    """
    batches = wds.WebLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                            persistent_workers=False, pin_memory=pin_memory,
                            prefetch_factor=4 if workers else None)
    try:
        yield from batches
    except BioCAPError as exc:
        message = _worker_message(exc)
        if message is None:
            raise
        raise type(exc)(message) from None


def _worker_message(exc: BaseException) -> str | None:
    """The original message of an exception re-raised by a DataLoader ("Caught X in DataLoader worker
    process N. Original Traceback ... X: message"), or None if it was not re-raised by one."""
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return None
    starts = [m.end() for m in re.finditer(rf"^(?:[\w.]+\.)?{re.escape(type(exc).__name__)}: ", text, re.M)]
    return text[starts[-1]:].rstrip() if starts else None
