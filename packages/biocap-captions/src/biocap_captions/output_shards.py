"""New shards with ``caption.txt`` added: the original's output, for training without ``--captions``.

Members are copied with their stored names (``taxonTag.txt`` keeps its case,
which webdataset's default reader would lower) and bytes; an existing
``caption.txt`` is replaced. Samples that got no caption are copied without
one, as the original did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

import webdataset as wds
from biocap_core.fileio import atomic_write
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

CAPTION_MEMBER = "caption.txt"


def _raw_samples(url: str) -> Iterator[dict]:
    return group_by_keys(tar_file_expander(url_opener([{"url": url}])), lcase=False)


def write_captioned_shard(src: str, dst: str | os.PathLike, captions: Mapping[str, str]) -> int:
    """Copy shard ``src`` to ``dst`` (atomically) with captions; returns how many samples got one."""
    captioned = 0

    def write(tmp: Path) -> None:
        nonlocal captioned
        with wds.TarWriter(str(tmp), mtime=0) as sink:
            for sample in _raw_samples(src):
                key = sample["__key__"]
                members = {k: v for k, v in sample.items() if not k.startswith("__") and k.lower() != CAPTION_MEMBER}
                caption = captions.get(key)
                if caption is not None:
                    members[CAPTION_MEMBER] = caption
                    captioned += 1
                sink.write({"__key__": key, **members})

    atomic_write(dst, write)
    return captioned
