"""What produced an output: package versions and the run record that ``--log`` writes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biocap_core import runtime
from biocap_core.fileio import atomic_write


def versions() -> dict[str, str]:
    return runtime.versions("biocap-predict")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLog:
    """A provenance record (versions, command, model, inputs, start and end) written as JSON at the
    end: status ``ok``, or ``failed`` with the error when the run stops on one (see
    :meth:`failing`)."""

    def __init__(self, path: str | Path | None, **details: Any):
        self.path = Path(path) if path else None
        self.record: dict[str, Any] = {
            "command": sys.argv,
            "started_at": now(),
            "versions": versions(),
            **details,
        }

    def update(self, **details: Any) -> None:
        self.record.update(details)

    def write(self, status: str = "ok") -> None:
        if self.path is None:
            return
        self.record.update(status=status, finished_at=now())
        atomic_write(
            self.path, lambda tmp: tmp.write_text(json.dumps(self.record, indent=1, default=str))
        )

    @contextmanager
    def failing(self) -> Iterator[RunLog]:
        """Around a run: an error (or Ctrl-C) ending it writes the record with status ``failed``
        and the error, then goes on up."""
        try:
            yield self
        except BaseException as exc:
            self.update(error=f"{type(exc).__name__}: {exc}")
            self.write("failed")
            raise
