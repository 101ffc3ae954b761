"""Runs over large collections, written in parts that survive a kill and spread over jobs.

A ``predict`` or ``embed`` run with ``--output OUT`` works through its inputs ``part_images`` at a
time and writes each part as a parquet file in the job's folder ``OUT.parts/job-I-of-N/``,
atomically (a temp file renamed), then records it in the job's small state file
(``OUT.parts/job-I-of-N.json``, also replaced atomically). A killed run, rerun with the same
command, reads the state file, skips the inputs its finished parts hold, deletes what was written
after the last record and goes on: every input ends up in exactly one part. A rerun whose inputs or
flags differ from the state file's is refused.

Inputs are split over jobs by core's one helper (:mod:`biocap_core.jobs`: ``--num-shards`` and
``--shard-index``, a SLURM array or torchrun's ranks). The last step joins the parts into ``OUT``
in the requested format (parquet, CSV or JSONL), after checking that every input of every job is
there once: a single job does it when it finishes, several jobs leave their parts for
``biocap-predict merge OUT``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from biocap_core.fileio import atomic_write
from biocap_core.jobs import resolve_job
from biocap_predict.errors import PredictInputError
from biocap_predict.outputs import EmbeddingWriter, read_embeddings, row_schema

#: Inputs per part: what a kill can lose, and how often the state file is written.
PART_IMAGES = 10_000
#: Called with the number of inputs just processed (moves the run's progress bar).
Step = Callable[[int], None]
#: Writes the rows or embeddings of some inputs to a part file; returns the skipped inputs' errors.
WritePart = Callable[[list[str], Path, Step], list[str]]


@dataclass(frozen=True)
class Job:
    """Which share of the inputs this process takes, and in parts of how many inputs."""

    num_shards: int | None = None
    shard_index: int | None = None
    part_images: int = PART_IMAGES

    def resolved(self) -> tuple[int, int]:
        """(jobs, this job's index): the flags, else a SLURM array task or torchrun rank, else
        (1, 0)."""
        return resolve_job(self.num_shards, self.shard_index)


def chunks(names: Iterable[str], size: int) -> Iterator[list[str]]:
    stream = iter(names)
    while chunk := list(itertools.islice(stream, size)):
        yield chunk


def share_size(total: int, num_jobs: int, job_index: int) -> int:
    """How many of ``total`` inputs :func:`~biocap_core.jobs.iter_select` gives a job."""
    return len(range(job_index, total, num_jobs))


class PartStore:
    """The parts and state file of one job of a run writing ``output``."""

    def __init__(self, output: str | os.PathLike, num_jobs: int, job_index: int):
        self.output = Path(output)
        self.split = (num_jobs, job_index)
        self.folder = parts_folder(self.output)
        stem = f"job-{job_index:05d}-of-{num_jobs:05d}"
        self.state_path = self.folder / f"{stem}.json"
        self.job_folder = self.folder / stem
        self.state: dict[str, Any] = {}

    def open(self, settings: dict[str, Any]) -> int:
        """Start or resume; the number of this job's inputs its finished parts hold. The state file
        is first written when a part is done, so a run that fails before may change its flags."""
        settings = json.loads(json.dumps(settings))  # as the state file gives them back
        self.job_folder.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state["settings"] != settings:
                differ = sorted(
                    set(_flat(settings).items()) ^ set(_flat(state["settings"]).items())
                )
                raise PredictInputError(
                    f"{self.state_path}: an unfinished run with other inputs or flags "
                    f"({', '.join(dict(differ))} differ) writes {self.output}; rerun it with its "
                    f"own command, or delete {self.folder} to start over"
                )
            self.state = state
        else:
            self.state = {"settings": settings, "parts": [], "finished": False}
        listed = {p["file"] for p in self.state["parts"]}
        for stray in self.job_folder.iterdir():  # written (or half-written) after the last record
            if str(stray.relative_to(self.folder)) not in listed:
                shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
        return sum(p["inputs"] for p in self.state["parts"])

    def next_part(self) -> Path:
        return self.job_folder / f"part-{len(self.state['parts']):06d}.parquet"

    def commit(self, part: Path | None, inputs: int, skipped: list[str], started: float) -> None:
        """Record a finished part (None: every input of it was skipped, so it has no file), begun
        at ``started`` (Unix time)."""
        name = str(part.relative_to(self.folder)) if part else None
        took = round(time.time() - started, 3)
        record = {"file": name, "inputs": inputs, "skipped": skipped, "started": started}
        self.state["parts"].append({**record, "seconds": took})
        self._save()

    def finish(self) -> None:
        self.state["finished"] = True
        self._save()

    def _save(self) -> None:
        atomic_write(self.state_path, lambda tmp: tmp.write_text(json.dumps(self.state)))


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"request.k": "5", ...}``: settings one value a key, to name the ones that differ."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def parts_folder(output: str | os.PathLike) -> Path:
    return Path(f"{output}.parts")


def start(
    store: PartStore, names: Callable[[], Iterable[str]], settings: dict[str, Any]
) -> dict[str, int]:
    """Count the inputs (for the progress bar's ETA, and checked against the state file, so a list
    that changed is refused) and open the job's state: before any model loads, so a refused rerun
    costs nothing. Returns ``listed`` (all jobs' inputs), ``inputs`` (this job's) and ``resumed``
    (those its finished parts hold)."""
    total = sum(1 for _ in names())
    share = share_size(total, settings["num_jobs"], settings["job_index"])
    settings = {k: v for k, v in settings.items() if k != "job_index"}
    done = store.open({**settings, "inputs_listed": total})
    return {"listed": total, "inputs": share, "resumed": done}


def run_parts(
    store: PartStore,
    names: Iterable[str],
    counts: dict[str, int],
    part_images: int,
    write_part: WritePart,
    *,
    progress: bool,
) -> dict[str, float]:
    """Write the rest of this job's share of ``names`` (:func:`start` counted it) in parts; returns
    what this run processed: ``inputs``, and the Unix times its first part ``started`` and its
    last ``finished`` (the run's speed without its start-up, in the ``--log`` record)."""
    stream = iter(names)
    for _ in itertools.islice(stream, counts["resumed"]):  # the finished parts' inputs
        pass
    bar = tqdm(
        total=counts["inputs"], initial=counts["resumed"], unit="img", desc="images",
        disable=not progress,
    )  # fmt: skip
    processed = {"inputs": 0, "started": time.time(), "finished": time.time()}
    with bar:
        for chunk in chunks(stream, part_images):
            part, started = store.next_part(), time.time()
            skipped = write_part(chunk, part, bar.update)
            store.commit(part if part.exists() else None, len(chunk), skipped, started)
            processed.update(inputs=processed["inputs"] + len(chunk), finished=time.time())
    store.finish()
    return processed


# ---- joining the parts ----
def merge(output: str | os.PathLike) -> dict[str, int]:
    """Join the parts of every job writing ``output`` into it, after checking that all jobs
    finished and every input is there exactly once; the parts folder is then removed.

    Returns ``inputs`` (listed), ``images`` (written) and ``skipped``.
    """
    folder = parts_folder(output)
    states = sorted(folder.glob("job-*-of-*.json"))
    if not states:
        raise PredictInputError(f"{folder}: no parts to merge (no job-*-of-*.json state files)")
    jobs = [json.loads(p.read_text()) for p in states]
    num_jobs = jobs[0]["settings"]["num_jobs"]
    expected = [f"job-{i:05d}-of-{num_jobs:05d}.json" for i in range(num_jobs)]
    missing = [name for name in expected if not (folder / name).exists()]
    unfinished = [p.name for p, s in zip(states, jobs) if not s["finished"]]
    if missing or unfinished or len(states) != num_jobs:
        raise PredictInputError(
            f"{folder}: not every job has finished (missing: {', '.join(missing) or 'none'}; "
            f"unfinished: {', '.join(unfinished) or 'none'}; expected {num_jobs} state files, "
            f"found {len(states)}); rerun those jobs with their commands, then merge"
        )
    if any(s["settings"] != jobs[0]["settings"] for s in jobs):
        raise PredictInputError(f"{folder}: the jobs ran with different inputs or flags")
    settings = jobs[0]["settings"]
    records = [p for s in jobs for p in s["parts"]]
    parts = [folder / p["file"] for p in records if p["file"]]
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise PredictInputError(f"{folder}: part files missing: {', '.join(absent[:5])}")
    inputs = sum(p["inputs"] for p in records)
    skipped = sum(len(p["skipped"]) for p in records)
    if inputs != settings["inputs_listed"]:
        raise PredictInputError(
            f"{folder}: the parts hold {inputs} inputs, the list has {settings['inputs_listed']}"
        )
    images = _check_once(records, folder)
    _join(parts, Path(output), settings)
    shutil.rmtree(folder)
    return {"inputs": inputs, "images": images, "skipped": skipped}


def _check_once(records: list[dict[str, Any]], folder: Path) -> int:
    """The number of files the parts hold, after checking that each part holds every input it read
    but the skipped ones, and that no file is in two parts (or listed twice). Files are compared by
    64-bit hashes, sorted: 8 bytes a file, where a set of the names would hold every name (a chance
    collision would be reported as a doubled file, at odds of about 1 in 400,000 for ten million
    files; rerunning ``merge`` gives the same answer, so such a report is checked by hand)."""
    hashes = []
    for record in records:
        if record["file"] is None:
            continue
        names = pl.scan_parquet(folder / record["file"]).select(pl.col("file_name").unique())
        hashed = names.select(pl.col("file_name").hash()).collect().to_series().to_numpy()
        if len(hashed) != record["inputs"] - len(record["skipped"]):
            raise PredictInputError(
                f"{folder / record['file']}: holds {len(hashed)} files for "
                f"{record['inputs'] - len(record['skipped'])} inputs read: a file in more than one "
                "part (or listed twice), or one without rows"
            )
        hashes.append(hashed)
    if not hashes:
        return 0
    every = np.sort(np.concatenate(hashes))
    doubled = int(np.count_nonzero(every[1:] == every[:-1]))
    if doubled:
        raise PredictInputError(
            f"{folder}: {doubled} file(s) are in more than one part (or listed twice)"
        )
    return len(every)


def _join(parts: list[Path], output: Path, settings: dict[str, Any]) -> None:
    """Stream the parts into ``output``: rows by polars' sinks, embeddings other than parquet
    through :class:`EmbeddingWriter` (an ``.npz`` file is made in memory, as always)."""
    fmt = settings["format"]
    if settings["command"] == "embed" and fmt != "parquet":
        writer = None
        for part in parts:
            names, feats, fingerprint = read_embeddings(part)
            writer = writer or EmbeddingWriter(output, fmt, fingerprint, settings["normalize"])
            writer.write(names, feats)
        if writer is None:
            raise PredictInputError(f"no input could be read: {output} is not written")
        writer.close()
        return
    if not parts:
        if settings["command"] == "embed":
            raise PredictInputError(f"no input could be read: {output} is not written")
        frame = pl.LazyFrame(schema=row_schema(settings["columns"]))
    else:
        frame = pl.scan_parquet(parts)
    sink = {"parquet": frame.sink_parquet, "csv": frame.sink_csv, "jsonl": frame.sink_ndjson}[fmt]
    atomic_write(output, sink)
