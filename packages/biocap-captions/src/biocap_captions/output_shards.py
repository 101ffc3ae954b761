"""New shards with ``caption.txt`` added: the original's output, for training without
``--captions``.

Members are copied with their stored names (``taxonTag.txt`` keeps its case,
which webdataset's default reader would lower) and bytes; an existing
``caption.txt`` is replaced. Samples that got no caption are copied without
one, as the original did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from biocap_core.shards import iter_samples, write_shard

CAPTION_MEMBER = "caption.txt"


def write_captioned_shard(src: str, dst: str | os.PathLike, captions: Mapping[str, str]) -> int:
    """Copy shard ``src`` to ``dst`` (atomically) with captions; returns how many samples got
    one."""
    captioned = 0

    def samples() -> Iterator[dict]:
        nonlocal captioned
        for sample in iter_samples(src, keep_case=True):
            members = {k: v for k, v in sample.items() if k.lower() != CAPTION_MEMBER}
            caption = captions.get(sample["__key__"])
            if caption is not None:
                members[CAPTION_MEMBER] = caption
                captioned += 1
            yield members

    write_shard(dst, samples())
    return captioned
