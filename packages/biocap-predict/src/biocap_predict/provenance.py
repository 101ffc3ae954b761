"""What produced an output: package versions and the run record that ``--log`` writes."""

from __future__ import annotations

import json
import sys
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
    end."""

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
