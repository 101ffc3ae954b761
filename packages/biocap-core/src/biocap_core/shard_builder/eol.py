"""The EOL image sets, each streamed once for every split.

The download's ``eol/image_set_NN.tar.gz`` hold about 100k ``<uuid>.jpg`` each and there is no
index of which set holds which image, while every shard mixes images of all sets. So each set is
read once, start to end (:func:`stage_tar`): every member the plan asks for is converted by the
image policy and appended to ``staging/<set>.bin``, with its offset in ``staging/<set>.parquet``;
then :func:`locate` maps each planned image to its place, and shard writers copy the converted
bytes from there (:class:`Staged`). The staging files take about the size of the EOL part of the
output and are removed when the build is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np
import polars as pl

from biocap_core.fileio import atomic_write
from biocap_core.shard_builder.catalog import key64
from biocap_core.shard_builder.images import BadImage, ImagePolicy
from biocap_core.shard_builder.plan import eol_keys

#: Member names the builder takes: a uuid (any version), then extensions (``<uuid>.jpg``).
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
NOT_FOUND = "not in any EOL image_set tar"
LOCATION = np.dtype([("tar", "i4"), ("offset", "i8"), ("length", "i8"), ("reason", "i4")])


def eol_tars(folder: Path) -> list[Path]:
    tars = sorted(folder.glob("image_set_*.tar.gz"))
    if not tars:
        raise FileNotFoundError(f"--eol {folder}: no image_set_*.tar.gz in it")
    return tars


def staging_dir(work: Path) -> Path:
    return work / "staging"


def _record_path(work: Path, tar: Path) -> Path:
    """A set's record (members, matched, sha256), kept for the manifest when staging is removed."""
    return work / "eol_sets" / f"{_name(tar)}.json"


def is_staged(work: Path, tar: Path) -> bool:
    return _record_path(work, tar).is_file() and (staging_dir(work) / f"{_name(tar)}.bin").is_file()


def _name(tar: Path) -> str:
    return tar.name.removesuffix(".tar.gz")


class _Hashing:
    """A file reader that hashes what it reads, so a tar's digest costs no second read."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def read(self, size=-1):
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def stage_tar(tar: Path, work: Path, policy: ImagePolicy, progress=None) -> dict:
    """Stream one image set; convert and store the planned images; returns its record (members,
    matched, sha256 and a read error if the tar ends badly: what was read before it is kept)."""
    keys = eol_keys(work)
    out_dir = staging_dir(work)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _name(tar)
    index: dict[str, list] = {"uuid": [], "offset": [], "length": [], "reason": []}
    record: dict = {
        "name": tar.name,
        "bytes": tar.stat().st_size,
        "members": 0,
        "matched": 0,
        "error": None,
    }
    digest = hashlib.sha256()

    def write(tmp: Path) -> None:
        with open(tar, "rb") as raw, open(tmp, "wb") as out:
            try:
                with tarfile.open(fileobj=_Hashing(raw, digest), mode="r|gz") as stream:
                    for member in stream:
                        if member.isfile():
                            _stage_member(
                                stream, member, keys, policy, out, index, record, progress
                            )
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            while chunk := raw.read(1 << 20):  # the rest, for the digest of the whole file
                digest.update(chunk)

    atomic_write(out_dir / f"{name}.bin", write)
    record["sha256"] = digest.hexdigest()
    frame = pl.DataFrame(
        index,
        schema={"uuid": pl.String, "offset": pl.Int64, "length": pl.Int64, "reason": pl.String},
    )
    atomic_write(out_dir / f"{name}.parquet", frame.write_parquet)
    atomic_write(_record_path(work, tar), lambda tmp: tmp.write_text(json.dumps(record)))
    return record


def _stage_member(stream, member, keys, policy, out, index, record, progress) -> None:
    record["members"] += 1
    stem = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
    if not _UUID.match(stem):
        return
    key = key64([stem])[0]
    at = np.searchsorted(keys, key)
    if at == len(keys) or keys[at] != key:
        return
    record["matched"] += 1
    reason = None
    try:
        blob = policy.apply(stream.extractfile(member).read())
    except BadImage as exc:
        blob, reason = b"", str(exc)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        blob, reason = b"", f"unreadable member: {exc}"
    index["uuid"].append(stem)
    index["offset"].append(out.tell())
    index["length"].append(len(blob))
    index["reason"].append(reason)
    out.write(blob)
    if progress is not None:
        progress(1)


def stage_records(work: Path, tars: list[Path]) -> list[dict]:
    return [json.loads(_record_path(work, t).read_text()) for t in tars]


def locate(work: Path, tars: list[Path]) -> None:
    """``plan/eol_locations.npy``: for each planned EOL image (in key order), the set holding it
    (-1: none), where its converted bytes are, and why it failed (an index into
    ``eol_reasons.json``, -1: it did not). The first set holding an id wins."""
    keys = eol_keys(work)
    loc = np.zeros(len(keys), dtype=LOCATION)
    loc["tar"], loc["reason"] = -1, -1
    reasons: dict[str, int] = {}
    for number, tar in enumerate(tars):
        index = pl.read_parquet(staging_dir(work) / f"{_name(tar)}.parquet")
        at = np.searchsorted(keys, key64(index["uuid"]))
        columns = (index["offset"], index["length"], index["reason"])
        for row_at, offset, length, reason in zip(at, *columns, strict=True):
            if loc["tar"][row_at] != -1:
                continue
            code = -1 if reason is None else reasons.setdefault(reason, len(reasons))
            loc[row_at] = (number, offset, length, code)
    plan = work / "plan"
    atomic_write(plan / "eol_locations.npy", lambda tmp: np.save(open(tmp, "wb"), loc))
    atomic_write(plan / "eol_reasons.json", lambda tmp: tmp.write_text(json.dumps(list(reasons))))


class Staged:
    """A shard writer's view of the staged EOL images (memory-mapped; one open file per set)."""

    def __init__(self, work: Path, tars: list[Path]):
        self.keys = eol_keys(work)
        self.loc = np.load(work / "plan" / "eol_locations.npy", mmap_mode="r") if tars else None
        self.reasons = json.loads((work / "plan" / "eol_reasons.json").read_text()) if tars else []
        self.paths = [staging_dir(work) / f"{_name(t)}.bin" for t in tars]
        self.files: dict[int, object] = {}

    def read(self, uuid: str) -> bytes:
        """The converted image; raises :class:`BadImage` with why there is none."""
        key = key64([uuid])[0]
        at = np.searchsorted(self.keys, key)
        if (
            self.loc is None
            or at == len(self.keys)
            or self.keys[at] != key
            or self.loc[at]["tar"] < 0
        ):
            raise BadImage(NOT_FOUND)
        tar, offset, length, reason = self.loc[at].tolist()
        if reason >= 0:
            raise BadImage(self.reasons[reason])
        if tar not in self.files:
            self.files[tar] = open(self.paths[tar], "rb")
        handle = self.files[tar]
        handle.seek(offset)
        return handle.read(length)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
