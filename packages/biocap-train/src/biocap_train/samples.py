"""Shards to raw samples, and what a raw sample holds: its image bytes and its texts.

Reads through biocap-core's shard reader (:func:`~biocap_core.shards.iter_samples`); a raw sample
is a dict of member bytes (``jpg``, ``sci.txt`` ...) with ``__key__`` and ``__url__``.
"""

from __future__ import annotations

from collections.abc import Iterator

from biocap_core.errors import ShardError
from biocap_core.shards import iter_samples, member_key

from biocap_train.bad_data import DataCounts
from biocap_train.captions import CaptionIndex

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")


def raw_samples(urls: Iterator[str], counts: DataCounts, limit_empty: int) -> Iterator[dict]:
    """Raw samples of a shard sequence; unreadable data is counted and the rest of that shard
    skipped. ``limit_empty`` shards in a row without a sample raise :class:`ShardError`: the
    sequence may be endless, and such data would otherwise be read forever."""
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
    """A short name for a set of shards: ``a.tar``, ``a.tar and b.tar`` or
    ``dir/a.tar..z.tar (N shards)``."""
    urls = sorted(urls)
    if len(urls) <= 2:
        return " and ".join(urls)
    return f"{urls[0]}..{urls[-1].rsplit('/', 1)[-1]} ({len(urls)} shards)"


def sample_text(sample: dict, text_type: str, captions: CaptionIndex | None) -> str | None:
    """The text of ``text_type`` for a raw sample (captions from the index when one is given)."""
    if text_type == "caption" and captions is not None:
        text = captions.get(sample["__key__"])
    else:
        data = sample.get(member_key(f"{text_type}.txt"))
        text = data.decode("utf-8", errors="replace") if data is not None else None
    return text if text and text.strip() else None


def image_bytes(sample: dict) -> bytes | None:
    """The encoded image of a raw sample (its first member of :data:`IMAGE_MEMBERS`), if any."""
    for ext in IMAGE_MEMBERS:
        if ext in sample:
            return sample[ext]
    return None
