"""Shard patterns: a local shard that a pattern names but that does not exist is named at once."""

from __future__ import annotations

import io
import tarfile

import pytest

from biocap_core.errors import ShardError
from biocap_core.shards import expand_sources, iter_samples


def _shard(path):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("k0.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))


def test_a_brace_pattern_names_the_shard_that_is_missing(tmp_path):
    for i in (0, 1, 2, 4):
        _shard(tmp_path / f"shard-{i:06d}.tar")
    with pytest.raises(ShardError, match=r"no such shard file\(s\): \S*/shard-000003\.tar \(from ") as info:
        expand_sources(f"{tmp_path}/shard-{{000000..000004}}.tar")
    assert "shard-000002" not in str(info.value)


def test_a_missing_source_after_double_colon_is_named(tmp_path):
    _shard(tmp_path / "a-0.tar")
    with pytest.raises(ShardError, match=r"no such shard file\(s\): \S*/b-0\.tar, \S*/b-1\.tar "):
        expand_sources(f"{tmp_path}/a-0.tar::{tmp_path}/b-{{0..1}}.tar", weights="1::2")


def test_reading_a_pattern_with_a_missing_shard_names_it_before_reading(tmp_path):
    _shard(tmp_path / "s-0.tar")
    with pytest.raises(ShardError, match=r"no such shard file\(s\): \S*/s-1\.tar"):
        list(iter_samples(f"{tmp_path}/s-{{0..1}}.tar", require=("jpg",)))


def test_remote_urls_are_left_to_the_reader():
    urls, _ = expand_sources("pipe:cat /nowhere/x-{0..1}.tar::https://example.org/y.tar")
    assert urls == ["pipe:cat /nowhere/x-0.tar", "pipe:cat /nowhere/x-1.tar", "https://example.org/y.tar"]
