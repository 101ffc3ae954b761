"""The captioning loop: stream each unit in batches, caption, check, checkpoint, finish.

The next batch is read, prompted and prepared by the engine (vLLM: images
decoded, chat template rendered) in a background thread while the current one
generates, so the accelerator does not wait for the CPU between batches.
Memory is bounded by two batches of images, the one generating and the next
(three with an engine that can ``submit``: it gets the next batch while the
current one finishes), plus the unit's caption rows (text only). Every sample
ends in exactly one place: the captions table, or the errors table with its
reason. Failures are isolated per sample
(:func:`~biocap_captions.engine.generate_isolated`); an unreadable shard is
reported and skipped without touching the others; an engine that fails
``max_consecutive_failures`` samples in a row stops the run, keeping those
samples out of the errors table so a rerun retries them. So does an output
file that cannot be written: the units after it could not be kept either.
With ``retry_errors``, finished units that have error rows are reopened and
those samples captioned again (:meth:`~biocap_captions.store.UnitStore.reopen`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import polars as pl
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from biocap_captions.checks import check_caption
from biocap_captions.engine import (
    CaptionRequest,
    Completion,
    Engine,
    EngineBroken,
    Result,
    generate_isolated,
    result_of,
)
from biocap_captions.output_shards import write_captioned_shard
from biocap_captions.prompt import PROMPT_VERSION, BuiltPrompt, PromptBuilder, PromptParts
from biocap_captions.sources import DescriptionLookup, Sample, ShardUnit, Unit
from biocap_captions.store import OutputError, UnitStore, writing
from biocap_core import schemas
from biocap_core.errors import ShardError

log = logging.getLogger("biocap_captions")
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    out: Path
    batch_size: int = 256
    #: Checkpoint a unit's new rows after this many seconds or rows, whichever comes first.
    checkpoint_seconds: float = 60.0
    checkpoint_rows: int = 4096
    #: Also write each input shard again, with caption.txt, into this folder.
    write_shards: Path | None = None
    max_consecutive_failures: int = 100
    progress: bool = True
    #: Caption again the error rows of finished units (a transient fault must not leave a permanent
    #: hole).
    retry_errors: bool = False


@dataclass
class RunReport:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    captions: int = 0
    errors: int = 0
    seconds: float = 0.0
    #: Error rows in all finished units of the run, finished now or before: what ``retry_errors``
    #: would retry.
    errors_left: int = 0


class _Pending:
    """Rows of one unit not yet checkpointed; engine failures of the current streak kept apart."""

    def __init__(self) -> None:
        self.captions: list[dict] = []
        self.errors: list[dict] = []
        self.streak: list[dict] = []

    def __len__(self) -> int:
        return len(self.captions) + len(self.errors) + len(self.streak)

    def take(self, include_streak: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
        errors = self.errors + (self.streak if include_streak else [])
        frames = schemas.CAPTIONS.frame(self.captions), schemas.CAPTION_ERRORS.frame(errors)
        self.captions, self.errors = [], []
        if include_streak:
            self.streak = []
        return frames


@dataclass
class _Batch:
    """Samples sent to the engine together; ``submitted`` while the engine works on it in the
    background.

    ``problems`` are error rows of samples read with the batch that have no usable image;
    ``read`` counts the unit's samples read up to the batch's last one."""

    samples: list[Sample]
    prompts: list[BuiltPrompt]
    requests: list[CaptionRequest]
    problems: list[dict]
    read: int
    submitted: Future[list[Result]] | None = None


_END = object()


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items``, making the next one in a background thread while the caller works on this
    one.

    At most one item is made ahead, so memory holds two. Exceptions of ``items``
    reach the caller at that item. Closing waits for an item being made (one
    batch's preparation), then closes ``items``. By hand rather than a queue and
    a thread: with ``next`` submitted only once the caller took the item, "one
    ahead" holds by construction.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
    try:
        upcoming = pool.submit(next, items, _END)
        while (item := result_of(upcoming)) is not _END:
            upcoming = pool.submit(next, items, _END)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


class Captioner:
    """Runs an engine over units, writing one captions and one errors table per unit."""

    def __init__(
        self,
        engine: Engine,
        prompts: PromptBuilder,
        options: RunOptions,
        descriptions: DescriptionLookup | None = None,
    ):
        self.engine = engine
        self.prompts = prompts
        self.options = options
        self.descriptions = descriptions
        self._failures_in_a_row = 0

    def run(self, units: Sequence[Unit]) -> RunReport:
        report, start = RunReport(), time.monotonic()
        stores = {u.name: UnitStore(self.options.out, u.name) for u in units}
        retry = {
            u.name
            for u in units
            if self.options.retry_errors
            and stores[u.name].finished()
            and stores[u.name].error_count()
        }
        todo = [u for u in units if u.name in retry or not stores[u.name].finished()]
        for unit in todo:  # refuse to mix models or prompts before any work is done
            store = stores[unit.name]
            done = store.read_final() if unit.name in retry else store.load_partial()[0]
            store.check_resumable(done, self.engine.model, PROMPT_VERSION)
        for unit in units:
            if unit.name not in retry and stores[unit.name].finished():
                self._already_finished(unit, stores[unit.name])
                report.skipped.append(unit.name)
        expected = [u.expected for u in todo]
        total = sum(expected) if all(e is not None for e in expected) else None
        with (
            tqdm(
                total=total,
                unit="img",
                desc="captions",
                disable=not self.options.progress,
                dynamic_ncols=True,
                smoothing=0.05,
            ) as bar,
            logging_redirect_tqdm(),
        ):
            for unit in todo:
                try:
                    if unit.name in retry:
                        log.info(
                            "retrying the %d samples of %s that have no caption",
                            stores[unit.name].error_count(),
                            unit.name,
                        )
                        stores[unit.name].reopen()
                    captions, errors = self._unit(unit, stores[unit.name], bar)
                except (EngineBroken, OutputError):
                    raise
                except (
                    Exception
                ) as exc:  # an unreadable shard or image folder: report it, go on with the rest
                    log.error("unit %s failed and stays unfinished: %s", unit.name, exc)
                    report.failed[unit.name] = f"{type(exc).__name__}: {exc}"
                    continue
                report.finished.append(unit.name)
                report.captions += captions
                report.errors += errors
        report.errors_left = sum(
            stores[u.name].error_count() for u in units if stores[u.name].finished()
        )
        report.seconds = time.monotonic() - start
        return report

    def _already_finished(self, unit: Unit, store: UnitStore) -> None:
        store.drop_partial()  # left over when a run died between the final write and the cleanup
        target = self._shard_target(unit)
        if target is not None and not target.is_file():
            captions = store.read_final()
            with writing(target):
                write_captioned_shard(
                    unit.url, target, dict(zip(captions["uuid"], captions["caption"]))
                )

    def _shard_target(self, unit: Unit) -> Path | None:
        if self.options.write_shards is None or not isinstance(unit, ShardUnit):
            return None
        return self.options.write_shards / unit.label

    def _unit(self, unit: Unit, store: UnitStore, bar: tqdm) -> tuple[int, int]:
        done_captions, done_errors = store.load_partial()
        done = set(done_captions["uuid"].to_list()) | set(done_errors["uuid"].to_list())
        if done and bar.total is not None:
            bar.total -= len(done)
            log.info("resuming %s: %d samples already done", unit.name, len(done))
        bar.set_postfix_str(unit.name, refresh=False)
        pending, read = _Pending(), 0
        in_flight: deque[_Batch] = deque()
        depth = 2 if hasattr(self.engine, "submit") else 1
        last_checkpoint = time.monotonic()
        try:
            # the next batch is read, prompted and prepared in a background thread while this one
            # generates
            with closing(one_ahead(self._batches(unit, done))) as batches:
                for batch in batches:
                    read = batch.read
                    pending.errors.extend(batch.problems)
                    bar.update(len(batch.problems))
                    if batch.samples:
                        in_flight.append(self._submit(batch))
                    if len(in_flight) == depth:
                        self._finish(in_flight.popleft(), unit.label, pending, bar)
                    if (
                        len(pending) >= self.options.checkpoint_rows
                        or time.monotonic() - last_checkpoint >= self.options.checkpoint_seconds
                    ):
                        store.write_checkpoint(*pending.take(include_streak=False))
                        last_checkpoint = time.monotonic()
            while in_flight:
                self._finish(in_flight.popleft(), unit.label, pending, bar)
            if unit.expected is not None and read != unit.expected:
                raise ShardError(
                    f"{unit.label}: read {read} samples where {unit.expected} were expected "
                    "(sizes.json); the shard may be truncated"
                )
        except BaseException as exc:
            for started in in_flight:  # never recorded, so a rerun sends them again
                if started.submitted is not None:
                    started.submitted.cancel()
            # keep what was captioned; a broken engine's failure streak is left out so a rerun
            # retries it
            store.write_checkpoint(*pending.take(include_streak=not isinstance(exc, EngineBroken)))
            raise
        new_captions, new_errors = pending.take()
        saved_captions, saved_errors = (
            store.load_partial()
        )  # earlier runs' checkpoints and this run's
        captions = pl.concat([saved_captions, new_captions], how="vertical")
        errors = pl.concat([saved_errors, new_errors], how="vertical")
        target = self._shard_target(unit)
        if target is not None:
            with writing(target):
                write_captioned_shard(
                    unit.url, target, dict(zip(captions["uuid"], captions["caption"]))
                )
        store.finalize(captions, errors)
        return captions.height, errors.height

    def _batches(self, unit: Unit, done: set[str]) -> Iterator[_Batch]:
        """The unit's samples not in ``done``, in batches ready for the engine, ending with one that
        has no samples. Runs in :func:`one_ahead`'s thread, so it changes nothing the run's thread
        reads.
        """
        batch, problems, seen, read = [], [], set(), 0
        for sample in unit.samples():
            read += 1
            if sample.uuid in done:
                if sample.uuid in seen:
                    log.warning(
                        "%s: uuid %s occurs twice; the second is skipped", unit.label, sample.uuid
                    )
                continue
            done.add(sample.uuid)
            seen.add(sample.uuid)
            if sample.problem:
                problems.append(self._error_row(sample.uuid, unit.label, sample.problem))
            else:
                batch.append(sample)
            if len(batch) == self.options.batch_size or len(problems) == self.options.batch_size:
                yield self._prepare(batch, problems, read)
                batch, problems = [], []
        if batch:
            yield self._prepare(batch, problems, read)
            problems = []
        yield _Batch([], [], [], problems, read)

    def _prepare(self, batch: list[Sample], problems: list[dict], read: int) -> _Batch:
        """The batch's prompts and requests, with the engine's own preparation when it has one."""
        wikis = (
            self.descriptions.get_many([s.uuid for s in batch])
            if self.descriptions
            else [None] * len(batch)
        )
        prompts = [
            self.prompts.build(PromptParts(s.display_name, s.scientific_name, s.klass, wiki))
            for s, wiki in zip(batch, wikis)
        ]
        requests = [CaptionRequest(s.uuid, s.image, p.instruction) for s, p in zip(batch, prompts)]
        prepare = getattr(self.engine, "prepare", None)
        if prepare is not None and requests:
            requests = prepare(requests)
        return _Batch(batch, prompts, requests, problems, read)

    def _submit(self, batch: _Batch) -> _Batch:
        """Submit the batch if the engine can take it now (it runs in the background until
        finished)."""
        submit = getattr(self.engine, "submit", None)
        if submit is not None:
            batch.submitted = submit(batch.requests)
        return batch

    def _finish(self, batch: _Batch, shard: str, pending: _Pending, bar: tqdm) -> None:
        """Wait for the batch's results and record each as a caption or an error row."""
        results = generate_isolated(self.engine, batch.requests, batch.submitted)
        now = datetime.now(UTC)
        for sample, prompt, result in zip(batch.samples, batch.prompts, results):
            if not isinstance(result, Completion):
                pending.streak.append(self._error_row(sample.uuid, shard, result.reason, now))
                self._failures_in_a_row += 1
                if self._failures_in_a_row >= self.options.max_consecutive_failures:
                    raise EngineBroken(
                        f"{self._failures_in_a_row} samples in a row failed (last:"
                        f" {result.reason}); stopping. Captions so far are checkpointed; rerun to"
                        " resume"
                    )
                continue
            self._failures_in_a_row = 0
            pending.errors.extend(pending.streak)
            pending.streak = []
            checked = check_caption(
                result.text,
                result.finish_reason,
                sample.display_name,
                sample.scientific_name,
                self.prompts.word_limit,
            )
            if not checked.caption:
                pending.errors.append(
                    self._error_row(
                        sample.uuid,
                        shard,
                        f"empty caption: raw completion {result.text[:100]!r}",
                        now,
                    )
                )
                continue
            pending.captions.append(
                {
                    "uuid": sample.uuid,
                    "caption": checked.caption,
                    "model": self.engine.model,
                    "prompt_version": PROMPT_VERSION,
                    "finish_reason": result.finish_reason,
                    "n_tokens": result.n_tokens,
                    "wiki_used": prompt.wiki_used,
                    "created_at": now,
                    "shard": shard,
                    "word_count": checked.word_count,
                    "names_species": checked.names_species,
                    "flags": checked.flags,
                }
            )
        bar.update(len(batch.samples))

    @staticmethod
    def _error_row(uuid: str, shard: str, reason: str, now: datetime | None = None) -> dict:
        return {
            "uuid": uuid,
            "shard": shard,
            "reason": reason,
            "created_at": now or datetime.now(UTC),
        }
