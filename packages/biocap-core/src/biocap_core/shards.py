"""TreeOfLife-10M webdataset shards: member names, shard lists, sizes and checked reading."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import braceexpand
import webdataset as wds

from biocap_core.errors import ShardError
from biocap_core.taxonomy import TOL_TEXT_TYPES

#: Text members written by BioCLIP's shard writer, as stored in the tar (case kept).
TOL_TEXT_MEMBERS: tuple[str, ...] = tuple(f"{t}.txt" for t in TOL_TEXT_TYPES) + (
    "scientific_name.txt",
    "taxonomic_name.txt",
    "common_name.txt",
)
#: Every member of a BioCAP training sample: the image, the TreeOfLife texts and the caption.
TOL_MEMBERS: tuple[str, ...] = ("jpg",) + TOL_TEXT_MEMBERS + ("caption.txt",)


def member_key(member: str) -> str:
    """The key webdataset gives a member (it lower-cases extensions: ``taxonTag.txt`` -> ``taxontag.txt``)."""
    return member.lower()


def expand_urls(spec: str | Iterable[str]) -> list[str]:
    """Brace-expand a shard pattern (``shard-{000000..000159}.tar``); ``::`` joins several patterns."""
    if not isinstance(spec, str):
        return [url for part in spec for url in expand_urls(part)]
    urls = []
    for part in spec.split("::"):
        urls.extend(braceexpand.braceexpand(part.strip()))
    return urls


def read_sizes(shard_dir: str | os.PathLike) -> dict[str, int]:
    """Per-shard sample counts from ``sizes.json`` (flat, or nested under ``per_shard``)."""
    path = Path(shard_dir) / "sizes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sizes.json beside the shards; pass the sample count explicitly")
    data = json.loads(path.read_text())
    data = data.get("per_shard", data)
    try:
        return {str(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ShardError(f"{path}: expected {{shard name: count}}, got {str(data)[:200]}") from exc


def count_samples(urls: Iterable[str]) -> int:
    """Total samples of the given shards from the ``sizes.json`` files beside them."""
    total, cache = 0, {}
    for url in urls:
        path = Path(url)
        sizes = cache.setdefault(path.parent, read_sizes(path.parent))
        if path.name not in sizes:
            raise ShardError(f"{path.parent / 'sizes.json'}: no count for {path.name}")
        total += sizes[path.name]
    return total


def iter_samples(urls: str | Iterable[str], require: Iterable[str] = TOL_MEMBERS) -> Iterator[dict]:
    """Raw samples of the shards, in order; a sample missing a required member raises
    :class:`ShardError` naming the shard, the sample key and the member."""
    required = [member_key(m) for m in require]
    dataset = wds.WebDataset(expand_urls(urls), shardshuffle=False)
    for sample in dataset:
        missing = [m for m in required if m not in sample]
        if missing:
            raise ShardError(
                f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')!r} has no member(s) {missing}"
            )
        yield sample
