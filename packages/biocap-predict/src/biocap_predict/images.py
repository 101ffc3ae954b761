"""Turning what the user hands us (paths, folders, PIL images, bytes, tensors) into named inputs.

Decoding and preprocessing are core's one image dataset (:mod:`biocap_core.imagefiles`): workers
hand over uint8 crops, each batch is normalised where the model runs, and an image that cannot be
decoded comes back as a failure of its batch, so a folder run skips it and reports it instead of
stopping.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from biocap_predict.errors import ImageError


@dataclass(frozen=True)
class Named:
    """One input with the name it has in the output (``file_name``)."""

    name: str
    data: Any  # a path, PIL image, bytes or preprocessed (3, H, W) tensor


def name_inputs(images: Iterable[Any]) -> list[Named]:
    """Give every input its output name: a path names itself, ``(name, data)`` is named ``name``,
    anything else is named by its position."""
    out = []
    for i, item in enumerate(images):
        if isinstance(item, Named):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append(Named(item[0], item[1]))
        elif isinstance(item, (str, os.PathLike)):
            out.append(Named(str(item), item))
        else:
            out.append(Named(str(i), item))
    return out


def iter_paths(
    paths: Sequence[str | os.PathLike],
    recursive: bool = False,
    from_list: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Files named on the command line, the image files of folders, and the lines of a list file,
    as a stream: a list of millions of photos is read a line at a time, never held.

    Folders are walked in sorted order (one folder's names at a time), so every run and every job
    sees the same sequence. A name on the command line that does not exist is an
    :class:`ImageError` naming it, as is a folder without files; a list line that names no file is
    passed on, and skipped and reported when it is read, so one missing photo does not stop a run
    over millions.
    """
    given = 0
    for name in map(str, paths):
        if not os.path.exists(name):
            raise ImageError(f"{name}: no such image file or folder")
        for file in _expanded(name, recursive):
            given += 1
            yield file
    if from_list is not None:
        try:
            lines = open(from_list)
        except OSError as exc:
            raise ImageError(f"{from_list}: cannot read the list of images: {exc}") from exc
        with lines:
            for line in lines:
                name = line.strip()
                if name and not name.startswith("#"):
                    for file in _expanded(name, recursive):
                        given += 1
                        yield file
    if not given:
        raise ImageError("no input images given")


def _expanded(name: str, recursive: bool) -> Iterator[str]:
    if not os.path.isdir(name):
        yield name
        return
    found = False
    for file in _files_in(os.path.normpath(name), recursive):
        found = True
        yield file
    if not found:
        raise ImageError(
            f"{name}: folder holds no files" + ("" if recursive else " (use --recursive?)")
        )


#: Names the photo column of an observations CSV may have (the first one present is used).
PHOTO_COLUMNS = ("path", "filepath", "file_name", "file", "image")


def read_observations(from_list: str | os.PathLike, group_by: str) -> dict[str, list[str]]:
    """``--from-list CSV --group-by COLUMN``: each value of ``COLUMN`` (an observation, several
    photos of one organism) and its photos, in order of first appearance; the photos are in the
    column named ``path`` (or ``filepath``, ``file_name``, ``file``, ``image``)."""
    try:
        table = pl.read_csv(from_list, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ImageError(f"{from_list}: cannot read the observations CSV: {exc}") from exc
    photo = next((c for c in PHOTO_COLUMNS if c in table.columns), None)
    if group_by not in table.columns or photo is None:
        raise ImageError(
            f"{from_list}: --group-by needs a CSV with the column {group_by!r} and a photo column "
            f"({', '.join(PHOTO_COLUMNS)}); found {table.columns}"
        )
    observations: dict[str, list[str]] = {}
    for line, (obs, path) in enumerate(table.select(group_by, photo).iter_rows(), start=2):
        if not (obs or "").strip() or not (path or "").strip():
            raise ImageError(f"{from_list}: line {line}: empty {group_by!r} or {photo!r}")
        if not Path(path.strip()).is_file():
            raise ImageError(f"{from_list}: line {line}: {path.strip()}: no such image file")
        observations.setdefault(obs.strip(), []).append(path.strip())
    return observations


def _files_in(folder: str, recursive: bool) -> Iterator[str]:
    """The files of ``folder`` (and of its subfolders, symlinked ones not followed) but hidden ones,
    in the order of their sorted paths. ``os.scandir`` reads each entry's type from the listing,
    where ``Path.iterdir`` and ``is_file`` stat every file: 1 instead of 10 us a file, which a
    folder of a million photos notices (measured).
    """
    with os.scandir(folder) as listing:
        entries = [
            (e.name + "/", e.path, True)  # "/" sorts a folder's files as their paths sort
            if recursive and e.is_dir(follow_symlinks=False)
            else (e.name, e.path, False)
            for e in listing
            if e.is_file() or (recursive and e.is_dir(follow_symlinks=False))
        ]
    for name, path, is_dir in sorted(entries):
        if is_dir:
            yield from _files_in(path, recursive)
        elif not name.startswith("."):
            yield path
