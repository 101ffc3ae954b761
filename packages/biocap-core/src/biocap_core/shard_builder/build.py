"""The build: plan, stage the EOL sets, write the shards, then ``sizes.json``, ``errors.parquet``
and ``manifest.json``.

Work is split twice: across jobs (``num_jobs``/``job_index``: each job stages its share of the EOL
sets and writes its share of the shards, then waits for the sets the other jobs stage) and, within
a job, across ``workers`` processes. A shard is written to a temp file and renamed when complete,
then its report (sample count, failed rows) is written, so a killed build rerun with the same
command redoes only shards without a report, and writes the same bytes whatever was killed.
Whichever job finds every shard reported writes the split's ``sizes.json``, the errors table and
the manifest (the same bytes, whichever job).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from biocap_core import schemas
from biocap_core.errors import BioCAPError, EmptyTaxonError
from biocap_core.fileio import atomic_write
from biocap_core.jobs import select
from biocap_core.shard_builder import eol
from biocap_core.shard_builder.catalog import Inputs
from biocap_core.shard_builder.images import BadImage, ImagePolicy
from biocap_core.shard_builder.plan import make_plan, read_summary, shard_rows
from biocap_core.shards import write_shard
from biocap_core.taxonomy import Taxon, tol_names, tol_texts

#: How often a job waiting for other jobs' EOL sets looks again, in seconds.
WAIT_SECONDS = 2.0


class BuildMismatch(BioCAPError, ValueError):
    """``--out`` holds a build made from other inputs or flags; resuming it would mix the two."""


class WorkerDied(BioCAPError, RuntimeError):
    """A worker process ended without finishing its task (a signal, the OOM killer)."""


@dataclass(frozen=True)
class BuildOptions:
    """How to build (see ``biocap-core shards --help``); ``splits`` None: every split of the
    catalog but ``train_small``, which repeats rows of ``train``."""

    splits: tuple[str, ...] | None = None
    policy: ImagePolicy = field(default_factory=ImagePolicy)
    shard_size: int = 10_000
    seed: int = 0
    workers: int = 1
    num_jobs: int = 1
    job_index: int = 0
    progress: bool = True
    keep_staging: bool = False


@dataclass
class BuildResult:
    written_now: int  #: shards this call wrote
    complete: bool  #: every shard of every split is written (by this job or others)
    manifest: dict | None  #: when complete


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.tar"


def build(inputs: Inputs, out: Path, options: BuildOptions) -> BuildResult:
    """Build (or resume building) the shards of ``inputs`` under ``out``."""
    work = out / ".build"
    summary = _plan(inputs, out, work, options)
    tars = eol.eol_tars(inputs.eol) if summary["eol_images"] and inputs.eol else []
    units = [(split, k) for split, c in summary["splits"].items() for k in range(c["shards"])]
    mine = select(units, options.num_jobs, options.job_index)
    todo = [u for u in mine if not _reported(out, work, *u)]
    for split, k in todo:  # what a killed run of this job left half-written
        for stale in (out / split).glob(f".{shard_name(k)}.tmp-*"):
            stale.unlink()
    unfinished = any(not _reported(out, work, *u) for u in units)
    counter = mp.get_context("spawn").Value("q", 0)
    # spawned, not forked: a worker starts without the main process's copy of the catalog
    context = mp.get_context("spawn")
    with ProcessPoolExecutor(max(1, options.workers), context, _init_worker, (counter,)) as pool:
        if unfinished and tars:  # this job's share of the sets, which other jobs' shards need too
            staged = [
                t
                for t in select(tars, options.num_jobs, options.job_index)
                if not eol.is_staged(work, t)
            ]
            total = summary["eol_images"] * len(staged) // len(tars)
            _run(
                pool,
                counter,
                [(eol.stage_tar, (t, work, options.policy)) for t in staged],
                "staging EOL image sets",
                total,
                options.progress,
            )
        if todo and tars:
            _wait_for(work, tars, options.progress)
            if not (work / "plan" / "eol_locations.npy").is_file():
                eol.locate(work, tars)
        rows = sum(
            min(summary["shard_size"], summary["splits"][s]["planned"] - k * summary["shard_size"])
            for s, k in todo
        )
        _run(
            pool,
            counter,
            [(write_one_shard, (out, work, s, k, options.policy, tars)) for s, k in todo],
            "writing shards",
            rows,
            options.progress,
        )
    complete = all(_reported(out, work, *u) for u in units)
    manifest = _finish(inputs, out, work, summary, options, tars) if complete else None
    return BuildResult(len(todo), complete, manifest)


def _plan(inputs: Inputs, out: Path, work: Path, options: BuildOptions) -> dict:
    """The plan of this build: made once, reused on resume; refused if ``out`` holds another."""
    fingerprint = _fingerprint(inputs, options)
    stamp = work / "fingerprint.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != fingerprint:
            raise BuildMismatch(
                f"--out {out} holds a build of other inputs or flags ({stamp}); "
                f"rerun with its exact command, or build into a new --out"
            )
        return read_summary(work)
    summary = make_plan(
        inputs,
        list(options.splits) if options.splits else None,
        options.seed,
        options.shard_size,
        work,
    )
    atomic_write(stamp, lambda tmp: tmp.write_text(json.dumps(fingerprint, indent=1)))
    return summary


def _fingerprint(inputs: Inputs, options: BuildOptions) -> dict:
    files = {"catalog": inputs.catalog, "captions": inputs.captions}
    files.update({f"exclude[{i}]": p for i, p in enumerate(inputs.exclude)})
    folders = {
        k: str(v.resolve()) if v else None
        for k, v in {
            **inputs.folders(),
            "image_root": inputs.image_root,
        }.items()
    }
    return {
        "files": {k: _describe_file(p) for k, p in files.items() if p is not None},
        "folders": folders,
        "eol_sets": [[t.name, t.stat().st_size] for t in eol.eol_tars(inputs.eol)]
        if inputs.eol
        else [],
        "key_column": inputs.key_column,
        "splits": list(options.splits) if options.splits else None,
        "policy": options.policy.describe(),
        "shard_size": options.shard_size,
        "seed": options.seed,
    }


def _describe_file(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# ---- the worker processes ----
_progress = None


def _init_worker(counter) -> None:
    global _progress
    _progress = counter


def _count(n: int) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def _call(task: tuple[Callable, tuple]):
    function, args = task
    return function(*args, progress=_count)


def _run(pool, counter, tasks: list, what: str, total: int, show: bool) -> None:
    """Run the tasks on the pool with one progress bar (images/s, ETA) fed by a shared counter.
    A worker that dies raises :class:`WorkerDied` here (a ``multiprocessing.Pool`` would wait
    for its task forever)."""
    if not tasks:
        return
    with counter.get_lock():
        counter.value = 0
    pending = {pool.submit(_call, task) for task in tasks}
    with tqdm(total=total, desc=what, unit="img", disable=not show, smoothing=0.05) as bar:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            bar.update(counter.value - bar.n)
            for future in done:
                try:
                    future.result()  # a worker's unexpected exception ends the build, naming it
                except BrokenProcessPool as exc:
                    raise WorkerDied(
                        "a worker process died (killed, or out of memory?); what is written is "
                        "kept: rerun the same command to go on"
                    ) from exc
        bar.update(counter.value - bar.n)


def _wait_for(work: Path, tars: list[Path], show: bool) -> None:
    said = False
    while missing := [t for t in tars if not eol.is_staged(work, t)]:
        if show and not said:
            print(
                f"waiting for {len(missing)} EOL image set(s) staged by the other jobs "
                f"(first: {missing[0].name})",
                flush=True,
            )
            said = True
        time.sleep(WAIT_SECONDS)


def _report_path(work: Path, split: str, shard: int) -> Path:
    return work / "reports" / split / f"{shard_name(shard)}.json"


def _reported(out: Path, work: Path, split: str, shard: int) -> bool:
    return (
        _report_path(work, split, shard).is_file() and (out / split / shard_name(shard)).is_file()
    )


class _Skip(Exception):
    """A plan row that gets no sample, with the reason for the errors table."""


def write_one_shard(
    out: Path,
    work: Path,
    split: str,
    shard: int,
    policy: ImagePolicy,
    tars: list[Path],
    progress: Callable[[int], None] = lambda n: None,
) -> dict:
    """Write ``out/<split>/shard-NNNNNN.tar`` from its plan rows, then its report."""
    rows = shard_rows(work, split, shard)
    staged = eol.Staged(work, tars)
    errors: list[dict] = []

    def samples():
        for row in rows.iter_rows(named=True):
            try:
                yield _sample(row, policy, staged)
            except _Skip as exc:
                errors.append(
                    {
                        "uuid": row["uuid"],
                        "split": split,
                        "source": row["source"] or "",
                        "path": row["path"],
                        "reason": str(exc),
                    }
                )
            progress(1)

    try:
        count = write_shard(out / split / shard_name(shard), samples())
    finally:
        staged.close()
    report = {"count": count, "errors": errors}
    atomic_write(_report_path(work, split, shard), lambda tmp: tmp.write_text(json.dumps(report)))
    return report


def _sample(row: dict, policy: ImagePolicy, staged: eol.Staged) -> dict:
    taxon = Taxon.from_mapping(row)
    try:
        texts = {**tol_texts(taxon), **tol_names(taxon)}
    except EmptyTaxonError:
        raise _Skip("no taxon text: no rank is left after BioCLIP's cleaning") from None
    try:
        if row["source"] is None:
            raise _Skip("no image source in the catalog")
        if row["source"] == "eol":
            jpeg = staged.read(row["uuid"])
        else:
            try:
                data = Path(row["path"]).read_bytes()
            except FileNotFoundError:
                raise _Skip("missing file") from None
            except OSError as exc:
                raise _Skip(f"unreadable file: {exc.strerror or exc}") from None
            jpeg = policy.apply(data)
    except BadImage as exc:
        raise _Skip(str(exc)) from None
    sample: dict[str, object] = {"__key__": row["uuid"], "jpg": jpeg}
    sample.update({f"{name}.txt": text for name, text in texts.items()})
    if row["caption"] is not None:
        sample["caption.txt"] = row["caption"]
    return sample


# ---- the end of a build ----
def _finish(
    inputs: Inputs, out: Path, work: Path, summary: dict, options: BuildOptions, tars: list[Path]
) -> dict:
    """``sizes.json`` per split, ``errors.parquet``, ``manifest.json``; staging removed."""
    errors, splits = [], {}
    for split, counts in summary["splits"].items():
        sizes = {}
        for k in range(counts["shards"]):
            report = json.loads(_report_path(work, split, k).read_text())
            sizes[shard_name(k)] = report["count"]
            errors += report["errors"]
        (out / split).mkdir(parents=True, exist_ok=True)
        atomic_write(
            out / split / "sizes.json", lambda tmp, s=sizes: tmp.write_text(json.dumps(s, indent=1))
        )
        failed = [e for e in errors if e["split"] == split]
        reasons: dict[str, int] = {}
        for e in failed:
            reasons[_reason_kind(e["reason"])] = reasons.get(_reason_kind(e["reason"]), 0) + 1
        splits[split] = {
            **counts,
            "written": sum(sizes.values()),
            "errors": len(failed),
            "errors_by_reason": dict(sorted(reasons.items())),
        }
    table = schemas.SHARD_ERRORS.frame(errors) if errors else schemas.SHARD_ERRORS.empty()
    schemas.write_parquet_atomic(table, out / "errors.parquet")
    manifest = {
        "inputs": _fingerprint(inputs, options),
        "eol_sets": eol.stage_records(work, tars) if tars else [],
        "image_policy": options.policy.describe(),
        "seed": options.seed,
        "shard_size": options.shard_size,
        "splits": splits,
        "errors": len(errors),
        "versions": _versions(),
    }
    for record in manifest["eol_sets"]:
        record["unmatched"] = record["members"] - record["matched"]
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    if not options.keep_staging:
        shutil.rmtree(eol.staging_dir(work), ignore_errors=True)
    return manifest


def _reason_kind(reason: str) -> str:
    """A reason without its details ("corrupt: broken data stream" -> "corrupt")."""
    return reason.split(":", 1)[0]


def _versions() -> dict:
    import importlib.metadata as metadata
    import platform

    from PIL import features

    names = ("biocap-core", "pillow", "polars", "numpy", "webdataset")
    found = {name: metadata.version(name) for name in names}
    return {**found, "python": platform.python_version(), "libjpeg": features.version("jpg")}
