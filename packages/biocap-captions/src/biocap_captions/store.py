"""The output files of one unit, laid out so that a kill at any moment loses nothing twice.

::

    OUT/captions/<unit>.parquet     finished unit (written last: its presence means done)
    OUT/errors/<unit>.parquet       samples of the unit that got no caption, with the reason
    OUT/partial/<unit>/NNNNNN.{errors,captions}.parquet
                                    checkpoints of an unfinished unit
    OUT/runs/<time>-job<i>of<n>-<pid>.json
                                    the settings of each run (:func:`write_run_manifest`)

Every file is written to a temp name and renamed. A rerun skips finished units,
reads the checkpoints of unfinished ones to skip their uuids, and finishes
them; each uuid is in exactly one checkpoint, so the final tables hold each
uuid once. Checkpoints are deleted only after the final files exist.

A write that fails (disk full, read-only mount) raises :class:`OutputError`
naming the file: going on would caption units whose results cannot be kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from biocap_core import schemas
from biocap_core.errors import BioCAPError
from biocap_core.fileio import atomic_write, writable_folder

CAPTIONS_DIR, ERRORS_DIR, PARTIAL_DIR, RUNS_DIR = "captions", "errors", "partial", "runs"


class ResumeMismatch(BioCAPError, ValueError):
    """Checkpoints in the output folder were made with another model or prompt version."""


class OutputError(BioCAPError, RuntimeError):
    """An output file or folder cannot be written; the run must stop, not go on losing work."""


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write of ``path`` into an :class:`OutputError` that names it and says why.

    polars reports I/O failures as its own errors (``ComputeError: ... No space
    left on device``), so those count as write failures too.
    """
    try:
        yield
    except (OSError, pl.exceptions.PolarsError) as exc:
        reason = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else " ".join(str(exc).split())
        )
        where = getattr(exc, "filename", None)
        detail = f" ({where})" if where and Path(where) != Path(path) else ""
        raise OutputError(f"cannot write {path}: {reason}{detail}") from exc


def prepare_output(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and prove a file can be written in it, before any work is done.

    An ``--out`` below a regular file or on a read-only mount then fails in one
    line at the start, not with a traceback after the model is loaded.
    """
    with writing(folder):
        return writable_folder(folder)


def write_run_manifest(
    out: str | os.PathLike, settings: dict, job_index: int, num_jobs: int
) -> Path:
    """Keep a run's settings beside its output, one file per run, so captions can be traced to them.

    Written before the engine starts (a run that dies loading the model is still on record); the
    name carries the start time, the job and the process id, so concurrent jobs never share a file.
    """
    started = datetime.now(UTC)
    path = (
        Path(out)
        / RUNS_DIR
        / f"{started:%Y%m%dT%H%M%S}-job{job_index}of{num_jobs}-{os.getpid()}.json"
    )
    with writing(path):
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(settings, indent=2, default=str)))
    return path


class UnitStore:
    """Paths and reads/writes of one unit's output."""

    def __init__(self, out: str | os.PathLike, name: str):
        self.out = Path(out)
        self.name = name
        self.captions_path = self.out / CAPTIONS_DIR / f"{name}.parquet"
        self.errors_path = self.out / ERRORS_DIR / f"{name}.parquet"
        self.partial_dir = self.out / PARTIAL_DIR / name

    def finished(self) -> bool:
        return self.captions_path.is_file()

    def _parts(self, kind: str) -> list[Path]:
        return (
            sorted(self.partial_dir.glob(f"*.{kind}.parquet")) if self.partial_dir.is_dir() else []
        )

    def load_partial(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Captions and errors checkpointed by earlier, interrupted runs."""
        captions = [schemas.CAPTIONS.read(p) for p in self._parts("captions")]
        errors = [schemas.CAPTION_ERRORS.read(p) for p in self._parts("errors")]
        return (
            pl.concat(captions, how="vertical") if captions else schemas.CAPTIONS.empty(),
            pl.concat(errors, how="vertical") if errors else schemas.CAPTION_ERRORS.empty(),
        )

    def check_resumable(self, captions: pl.DataFrame, model: str, prompt_version: str) -> None:
        """Refuse to mix models or prompt versions within one unit."""
        for column, expected in (("model", model), ("prompt_version", prompt_version)):
            found = sorted(set(captions[column].unique().to_list()) - {expected})
            if found:
                raise ResumeMismatch(
                    f"{self.partial_dir}: checkpoints were made with {column} {found[0]!r}, this"
                    f" run uses {expected!r}; rerun with the same settings or write to another"
                    " --out"
                )

    def write_checkpoint(self, captions: pl.DataFrame, errors: pl.DataFrame) -> None:
        """One numbered checkpoint (errors first, then captions; each written atomically)."""
        if captions.height == 0 and errors.height == 0:
            return
        existing = (
            [int(p.name.split(".", 1)[0]) for p in self.partial_dir.glob("*.parquet")]
            if self.partial_dir.is_dir()
            else []
        )
        number = max(existing, default=-1) + 1
        if errors.height:
            _write(errors, self.partial_dir / f"{number:06d}.errors.parquet")
        if captions.height:
            _write(captions, self.partial_dir / f"{number:06d}.captions.parquet")

    def finalize(self, captions: pl.DataFrame, errors: pl.DataFrame) -> None:
        """Write the final tables (errors, then captions, which marks the unit done), then drop
        checkpoints."""
        _write(errors, self.errors_path)
        _write(captions, self.captions_path)
        self.drop_partial()

    def error_count(self) -> int:
        """Error rows of a finished unit (read from the parquet footer, not the rows)."""
        if not self.errors_path.is_file():
            return 0
        return pl.scan_parquet(self.errors_path).select(pl.len()).collect().item()

    def reopen(self) -> None:
        """Make a finished unit unfinished again, with all its captions checkpointed.

        The normal resume path then captions exactly the uuids that have no
        caption (its error rows) and finalizes the unit with new tables. The
        captions file is removed only after the checkpoint holding its rows
        exists, so a kill at any moment leaves either the finished unit or a
        resumable one: no caption is lost or duplicated.
        """
        self.drop_partial()
        self.write_checkpoint(self.read_final(), schemas.CAPTION_ERRORS.empty())
        with writing(self.captions_path):
            self.captions_path.unlink()

    def drop_partial(self) -> None:
        if self.partial_dir.is_dir():
            shutil.rmtree(self.partial_dir)

    def read_final(self) -> pl.DataFrame:
        return schemas.CAPTIONS.read(self.captions_path)


def _write(df: pl.DataFrame, path: Path) -> None:
    with writing(path):
        schemas.write_parquet_atomic(df, path)
