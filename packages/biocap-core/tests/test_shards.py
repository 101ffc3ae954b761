"""Shard patterns name a missing shard at once; written shards read back as written, split by
size."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from biocap_core.errors import ShardError
from biocap_core.shards import expand_sources, iter_samples, read_sizes, write_shard, write_shards


def _shard(path):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("k0.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))


def test_a_brace_pattern_names_the_shard_that_is_missing(tmp_path):
    for i in (0, 1, 2, 4):
        _shard(tmp_path / f"shard-{i:06d}.tar")
    with pytest.raises(
        ShardError, match=r"no such shard file\(s\): \S*/shard-000003\.tar \(from "
    ) as info:
        expand_sources(f"{tmp_path}/shard-{{000000..000004}}.tar")
    assert "shard-000002" not in str(info.value)


def test_a_missing_source_after_double_colon_is_named(tmp_path):
    _shard(tmp_path / "a-0.tar")
    with pytest.raises(ShardError, match=r"no such shard file\(s\): \S*/b-0\.tar, \S*/b-1\.tar "):
        expand_sources(f"{tmp_path}/a-0.tar::{tmp_path}/b-{{0..1}}.tar", weights="1::2")


def test_reading_a_pattern_with_a_missing_shard_names_it_before_reading(tmp_path):
    _shard(tmp_path / "s-0.tar")
    with pytest.raises(ShardError, match=r"no such shard file\(s\): \S*/s-1\.tar"):
        list(iter_samples(f"{tmp_path}/s-{{0..1}}.tar"))


def test_remote_urls_are_left_to_the_reader():
    urls, _ = expand_sources("pipe:cat /nowhere/x-{0..1}.tar::https://example.org/y.tar")
    assert urls == [
        "pipe:cat /nowhere/x-0.tar",
        "pipe:cat /nowhere/x-1.tar",
        "https://example.org/y.tar",
    ]


def _samples(n):
    return [
        {
            "__key__": f"k{i}",
            "jpg": bytes([i]) * 3,
            "taxonTag.txt": f"Animalia {i}",
            "caption.txt": "é",
        }
        for i in range(n)
    ]


def test_written_shards_read_back_split_by_size_with_their_sizes(tmp_path):
    sizes = write_shards(iter(_samples(5)), tmp_path, shard_size=2)
    assert sizes == {"shard-000000.tar": 2, "shard-000001.tar": 2, "shard-000002.tar": 1}
    assert (
        read_sizes(tmp_path) == sizes and json.loads((tmp_path / "sizes.json").read_text()) == sizes
    )
    back = list(iter_samples(f"{tmp_path}/shard-{{000000..000002}}.tar", keep_case=True))
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in back] == [
        {
            "__key__": s["__key__"],
            "jpg": s["jpg"],
            "taxonTag.txt": s["taxonTag.txt"].encode(),
            "caption.txt": "é".encode(),
        }
        for s in _samples(5)
    ]
    assert "taxontag.txt" in next(
        iter_samples(str(tmp_path / "shard-000000.tar"))
    )  # webdataset's key


def test_same_samples_give_the_same_bytes_at_any_time(tmp_path, monkeypatch):
    write_shard(tmp_path / "a.tar", _samples(3))
    monkeypatch.setattr(
        "time.time", lambda: 2_000_000_000.0
    )  # a later clock must not show in the shard
    write_shard(tmp_path / "b.tar", _samples(3))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_failed_write_leaves_no_shard_behind(tmp_path):
    def failing():
        yield from _samples(2)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_shard(tmp_path / "s.tar", failing())
    assert list(tmp_path.iterdir()) == []
