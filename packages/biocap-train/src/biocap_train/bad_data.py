"""Bad data met on the way from shards to batches: what was skipped (counted, with examples, for
the epoch report and the checkpoint) and the error for data that can never serve the run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from biocap_core.errors import BioCAPError

#: Examples of each problem kept for the epoch report.
_MAX_EXAMPLES = 3
#: What to do when shards have no caption.txt, as both the pre-flight check and a stream that gives
#: up say.
CAPTIONS_FIX = ("pass --captions TABLE.parquet (uuid, caption), or train the taxonomic head only "
                "(a taxonomic --text-type such as taxon_com, or --caption-share 0; "
                "no --joint-loss)")


class DataUnusable(BioCAPError, ValueError):
    """The data cannot serve the run as configured (a text member missing everywhere, no decodable
    image)."""


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
        return {"counts": dict(self.counts),
                "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataCounts:
        data = data or {}
        return cls(Counter(data.get("counts", {})),
                   {k: list(v) for k, v in data.get("examples", {}).items()})

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
