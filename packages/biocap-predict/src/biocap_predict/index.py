"""The taxa index: one text embedding per taxon (and optionally per trait caption) for one model.

Layout of an index folder::

    taxa.parquet           the 7 ranks (species = epithet) and common name, one row per taxon
    text.safetensors       "embeddings": (taxa, dim) float32, unit rows, same order as taxa.parquet
    captions.parquet       optional: "caption", one row per trait caption
    captions.safetensors   optional: "embeddings": (captions, dim), for the caption head
    index.json             model fingerprint, label type, templates, inputs, versions (written last)

A build encodes taxa in chunks under ``.build/``, so an interrupted build resumes where it
stopped; a finished index whose model fingerprint and inputs match is reused as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from biocap_core import schemas
from biocap_core.embedding_cache import model_fingerprint
from biocap_core.errors import SchemaError
from biocap_core.fileio import atomic_write
from biocap_core.runtime import default_precision, resolve_device
from biocap_core.taxonomy import RANKS, SPECIES, TAXON_LABEL_TYPES, TEMPLATES, Taxon, label_text
from biocap_core.zeroshot import classifier_weights
from biocap_predict.errors import TaxaIndexError
from biocap_predict.provenance import now, versions

FORMAT = 1
_CHUNK_TAXA = 512


def weights_fingerprint(model) -> str:
    """Identifies the weights and config a text matrix was computed with; the precision used is
    recorded in index.json but does not decide compatibility."""
    return model_fingerprint(model, head="tax", precision="weights")


def read_taxa(source: str | os.PathLike | pl.DataFrame) -> pl.DataFrame:
    """Distinct taxa of a catalog (one row per image), a species list or any table with the 7 ranks,
    in order of first appearance; the first non-empty common name of each taxon is kept."""
    name = "<frame>" if isinstance(source, pl.DataFrame) else str(source)
    table = (schemas.TAXA.validate(source, source=name) if isinstance(source, pl.DataFrame)
             else schemas.TAXA.read(source))
    if "common_name" not in table.columns:
        table = table.with_columns(pl.lit("").alias("common_name"))
    columns = schemas.TAXA.column_names  # the 7 ranks and common_name
    table = table.select(columns).with_columns(pl.col(c).str.strip_chars() for c in columns)
    taxa = (table.with_columns(pl.when(pl.col("common_name") == "").then(None).otherwise(pl.col("common_name"))
                               .alias("common_name"))
            .group_by(list(RANKS), maintain_order=True)
            .agg(pl.col("common_name").drop_nulls().first())
            .with_columns(pl.col("common_name").fill_null("")))
    if taxa.height == 0:
        raise TaxaIndexError(f"{name}: no taxa (the table is empty)")
    return taxa


def taxa_texts(taxa: pl.DataFrame, label_type: str, source: str = "<taxa>") -> list[str]:
    """The label text of each taxon, built like the zero-shot benchmarks' (core's ``label_text``)."""
    if label_type not in TAXON_LABEL_TYPES:
        raise TaxaIndexError(f"unknown label type {label_type!r}; expected one of {TAXON_LABEL_TYPES}")
    texts = [label_text(Taxon.from_mapping(row), label_type) for row in taxa.iter_rows(named=True)]
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise TaxaIndexError(f"{source}: label type {label_type!r} gives no text for {len(empty)} taxa; "
                             f"first rows (0-based): {empty[:5]}")
    return texts


def read_captions(path: str | os.PathLike) -> list[str]:
    """Distinct trait captions of a captions table (``caption`` column) or a retrieval table (``captions``)."""
    path = Path(path)
    for schema, column in ((schemas.CAPTIONS, "caption"), (schemas.RETRIEVAL, "captions")):
        try:
            table = schema.read(path)
        except SchemaError:
            continue
        captions = list(dict.fromkeys(c.strip() for c in table[column].drop_nulls().to_list() if c.strip()))
        if not captions:
            raise TaxaIndexError(f"{path}: no captions in column {column!r}")
        return captions
    raise TaxaIndexError(f"{path}: not a captions table (needs a 'caption' column, as biocap-captions writes, "
                         "or a 'captions' column, as retrieval tables have)")


def _digest(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class RankGroups:
    """For ranks kingdom..genus: each species row's group id, each group's first row, each group's parent.

    A group is a path of names from the kingdom down (two genera of one name in different families
    are two groups), as pybioclip groups them.
    """

    ids: tuple[torch.Tensor, ...]  # per rank level kingdom..genus: (taxa,) int64
    first: tuple[np.ndarray, ...]  # per rank level: (groups,) row of the group's first taxon
    parent: tuple[torch.Tensor | None, ...]  # per rank level: (groups,) group id one rank up; None for kingdom

    @classmethod
    def of(cls, taxa: pl.DataFrame) -> "RankGroups":
        ids, first, parent = [], [], []
        rows = np.arange(taxa.height)
        for level in range(SPECIES):
            key = taxa.select(pl.concat_str(list(RANKS[:level + 1]), separator="\x1f")).to_series()
            gid = (key.rank("dense") - 1).cast(pl.Int64).to_numpy()
            head = np.zeros(int(gid.max()) + 1, dtype=np.int64)
            head[gid[::-1]] = rows[::-1]
            ids.append(torch.tensor(gid))
            first.append(head)
            parent.append(None if level == 0 else ids[level - 1][torch.from_numpy(head)])
        return cls(tuple(ids), tuple(first), tuple(parent))

    def size(self, level: int) -> int:
        return len(self.first[level])


class TaxaIndex:
    """Taxa, their text embeddings and optionally trait captions, for one model (see module doc)."""

    def __init__(self, taxa: pl.DataFrame, embeddings: torch.Tensor, meta: dict[str, Any],
                 captions: list[str] | None = None, caption_embeddings: torch.Tensor | None = None,
                 path: Path | None = None):
        if embeddings.shape[0] != taxa.height:
            raise TaxaIndexError(f"{path or '<index>'}: {taxa.height} taxa but {embeddings.shape[0]} embeddings")
        self.taxa, self.embeddings, self.meta, self.path = taxa, embeddings, meta, path
        self.captions, self.caption_embeddings = captions, caption_embeddings

    def __len__(self) -> int:
        return self.taxa.height

    def __repr__(self) -> str:
        return (f"TaxaIndex({len(self)} taxa, {len(self.captions or [])} captions, "
                f"label_type={self.meta.get('label_type')!r}, path={str(self.path) if self.path else None!r})")

    @property
    def fingerprint(self) -> str:
        return self.meta["model_fingerprint"]

    @property
    def has_captions(self) -> bool:
        return bool(self.captions)

    @cached_property
    def groups(self) -> RankGroups:
        return RankGroups.of(self.taxa)

    def rank_values(self, level: int) -> list[str]:
        """Distinct names at a rank (level 0..6); the species rank is named by its binomial."""
        if level == SPECIES:
            return self.binomials().unique(maintain_order=True).to_list()
        return self.taxa[RANKS[level]].unique(maintain_order=True).to_list()

    def binomials(self) -> pl.Series:
        return self.taxa.select(pl.concat_str(["genus", "species"], separator=" ").str.strip_chars()).to_series()

    def select(self, keep: np.ndarray | torch.Tensor) -> "TaxaIndex":
        """A view on the taxa where ``keep`` (a boolean mask) is true; captions are kept whole."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        rows = keep.nonzero().squeeze(1)
        return TaxaIndex(self.taxa[rows.numpy()], self.embeddings[rows], {**self.meta, "subset": True},
                         self.captions, self.caption_embeddings, self.path)

    # ---- reading ----
    @classmethod
    def load(cls, path: str | os.PathLike) -> "TaxaIndex":
        path = Path(path)
        meta_path = path / "index.json"
        if not meta_path.is_file():
            unfinished = (path / ".build").is_dir()
            hint = " (an unfinished build: run `biocap-predict index` again to resume)" if unfinished else ""
            raise TaxaIndexError(f"{path}: not a taxa index, {meta_path.name} is missing{hint}")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise TaxaIndexError(f"{path}: index format {meta.get('format')!r}; this version reads {FORMAT}")
        taxa = schemas.TAXA.read(path / "taxa.parquet").select(schemas.TAXA.column_names)
        embeddings = load_file(str(path / "text.safetensors"))["embeddings"]
        captions = caption_embeddings = None
        if meta.get("captions"):
            captions = pl.read_parquet(path / "captions.parquet")["caption"].to_list()
            caption_embeddings = load_file(str(path / "captions.safetensors"))["embeddings"]
        return cls(taxa, embeddings, meta, captions, caption_embeddings, path)

    def check_model(self, fingerprint: str, model_name: str = "the model") -> None:
        """Refuse an index built with other weights: its scores would be meaningless."""
        if fingerprint != self.fingerprint:
            raise TaxaIndexError(
                f"{self.path or 'the index'} was built with model {self.meta.get('model', '?')} "
                f"(fingerprint {self.fingerprint}), but {model_name} has fingerprint {fingerprint}; "
                "rebuild the index with this model (biocap-predict index)")

    # ---- building ----
    @classmethod
    def build(cls, model, taxa: str | os.PathLike | pl.DataFrame, out: str | os.PathLike, *,
              label_type: str = "taxon_com", templates: Sequence[str] | None = None,
              captions: str | os.PathLike | Sequence[str] | None = None, device: str = "auto",
              precision: str | None = None, batch_size: int = 256, progress: bool = True,
              model_name: str = "", pretrained: str | None = None) -> "TaxaIndex":
        """Encode one text per taxon (normalised mean over ``templates``, default the 81) and,
        optionally, each trait caption; write the index to ``out`` and return it.

        Resumes an interrupted build of the same inputs; returns a finished matching index as it is.
        """
        device = resolve_device(device)
        precision = precision or default_precision(device)
        templates = tuple(templates or TEMPLATES)
        table = read_taxa(taxa)
        texts = taxa_texts(table, label_type, str(taxa) if not isinstance(taxa, pl.DataFrame) else "<taxa>")
        caption_list = (read_captions(captions) if isinstance(captions, (str, os.PathLike))
                        else list(captions or []))
        fingerprint = weights_fingerprint(model)
        key = {"format": FORMAT, "model_fingerprint": fingerprint, "label_type": label_type,
               "templates": list(templates), "texts_sha256": _digest(texts),
               "captions_sha256": _digest(caption_list) if caption_list else None}
        out = Path(out)
        if _finished(out, key):
            return cls.load(out)
        builder = _Builder(model, out / ".build", key, device, precision, batch_size, progress)
        embeddings = builder.encode("taxa", texts, templates)
        caption_embeddings = builder.encode("captions", caption_list, ("{}",)) if caption_list else None
        meta = {**key, "model": model_name, "pretrained": pretrained, "precision": precision,
                "n_taxa": table.height, "embed_dim": embeddings.shape[1], "captions": len(caption_list),
                "inputs": {"taxa": str(taxa) if not isinstance(taxa, pl.DataFrame) else "<frame>",
                           "captions": str(captions) if isinstance(captions, (str, os.PathLike)) else None},
                "source": "build", "created_at": now(), "versions": versions()}
        index = cls(table, embeddings, meta, caption_list or None, caption_embeddings, out)
        index.save(out)
        shutil.rmtree(out / ".build", ignore_errors=True)
        return index

    @classmethod
    def from_tol(cls, model, source: str | os.PathLike, out: str | os.PathLike, *,
                 model_name: str = "", pretrained: str | None = None) -> "TaxaIndex":
        """Import published BioCLIP-style tree-of-life text embeddings as an index for ``model``: a
        ``(dim, taxa)`` matrix ``txt_emb_*.npy`` and its names ``txt_emb_*.json`` (``[[kingdom, ...,
        genus, epithet], common name]`` per column). ``source`` is the ``.npy`` file (its ``.json``
        beside it) or a folder holding one such pair (``txt_emb_species`` first)."""
        npy, names_path = tol_pair(Path(source))
        matrix = torch.from_numpy(np.load(npy)).float()
        names = json.loads(names_path.read_text())
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise TaxaIndexError(f"{npy}: shape {tuple(matrix.shape)} does not fit the {len(names)} names of "
                                 f"{names_path.name} (expected (dim, {len(names)}))")
        bad = [i for i, n in enumerate(names) if not (isinstance(n, list) and len(n) == 2 and len(n[0]) == 7)]
        if bad:
            raise TaxaIndexError(f"{names_path}: entries {bad[:5]} are not [[7 rank names], common name]")
        columns = schemas.TAXA.column_names
        taxa = pl.DataFrame([dict(zip(columns, [*(r or "" for r in n[0]), n[1] or ""]))
                             for n in names], schema={c: pl.String for c in columns}, orient="row")
        meta = {"format": FORMAT, "model_fingerprint": weights_fingerprint(model), "label_type": "tol",
                "templates": None, "model": model_name, "pretrained": pretrained, "n_taxa": taxa.height,
                "embed_dim": matrix.shape[0], "captions": 0,
                "inputs": {"tol": str(npy.absolute()), "tol_names": str(names_path.absolute())},
                "source": "tol", "created_at": now(), "versions": versions()}
        index = cls(taxa, F.normalize(matrix.T.contiguous(), dim=-1), meta, path=Path(out))
        index.save(out)
        return index

    def save(self, out: str | os.PathLike) -> None:
        """Write the folder; index.json goes last, so a folder with it is complete."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        schemas.write_parquet_atomic(schemas.TAXA.validate(self.taxa), out / "taxa.parquet")
        _save_matrix(self.embeddings, out / "text.safetensors")
        if self.captions:
            schemas.write_parquet_atomic(pl.DataFrame({"caption": self.captions}), out / "captions.parquet")
            _save_matrix(self.caption_embeddings, out / "captions.safetensors")
        atomic_write(out / "index.json", lambda tmp: tmp.write_text(json.dumps(self.meta, indent=1)))
        self.path = out


def _save_matrix(matrix: torch.Tensor, path: Path) -> None:
    tensor = matrix.detach().float().cpu().contiguous()
    atomic_write(path, lambda tmp: save_file({"embeddings": tensor}, str(tmp)))


def tol_pair(source: Path) -> tuple[Path, Path]:
    """The ``.npy`` matrix and ``.json`` names of a published tree-of-life embedding pair."""
    if source.is_dir():
        default = source / "txt_emb_species.npy"
        found = [default] if default.is_file() else sorted(source.glob("txt_emb_*.npy"))
        if len(found) != 1:
            listed = [p.name for p in found] or "none"
            raise TaxaIndexError(f"{source}: expected one txt_emb_*.npy + .json pair of published "
                                 f"tree-of-life embeddings, found {listed}")
        source = found[0]
    pair = (source, source.with_suffix(".json"))
    for p in pair:
        if not p.is_file():
            raise TaxaIndexError(f"{p}: missing (--from-tol needs a txt_emb_*.npy file and its "
                                 ".json names)")
    return pair


def _finished(out: Path, key: dict) -> bool:
    try:
        meta = json.loads((out / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(meta.get(k) == v for k, v in key.items())


class _Builder:
    """Encodes texts in chunks saved under ``work``, skipping chunks an earlier run of the same key saved."""

    def __init__(self, model, work: Path, key: dict, device: str, precision: str, batch_size: int,
                 progress: bool):
        self.model, self.work, self.device, self.precision = model, work, device, precision
        self.batch_size, self.progress = batch_size, progress
        key_path = work / "key.json"
        if work.is_dir() and (not key_path.is_file() or json.loads(key_path.read_text()) != key):
            shutil.rmtree(work)  # chunks of other inputs or another model: start over
        work.mkdir(parents=True, exist_ok=True)
        atomic_write(key_path, lambda tmp: tmp.write_text(json.dumps(key)))

    def encode(self, kind: str, texts: list[str], templates: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) unit rows: per text, the re-normalised mean over templates."""
        self.model.to(self.device)
        parts = []
        with tqdm(total=len(texts), desc=f"encoding {kind}", unit=kind, disable=not self.progress) as bar:
            for start in range(0, len(texts), _CHUNK_TAXA):
                chunk = self.work / f"{kind}-{start:09d}.safetensors"
                if chunk.is_file():
                    parts.append(load_file(str(chunk))["embeddings"])
                else:
                    part = classifier_weights(self.model, texts[start:start + _CHUNK_TAXA], templates,
                                              batch_size=self.batch_size, device=self.device,
                                              precision=self.precision).T.contiguous()
                    _save_matrix(part, chunk)
                    parts.append(part)
                bar.update(parts[-1].shape[0])
        return torch.cat(parts)
