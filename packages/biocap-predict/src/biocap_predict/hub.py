"""The tree-of-life text embeddings published on the Hugging Face Hub for the released models, used
when no taxa index is given: fetched once into the Hugging Face cache and imported once as a taxa
index under the toolkit's cache, then reused by every later run.

Downloads go through ``huggingface_hub``, so its settings apply: ``HF_HOME`` / ``HF_HUB_CACHE`` say
where the files are kept, ``HF_HUB_OFFLINE=1`` uses the cache alone, ``HF_ENDPOINT`` names a mirror.
The imported index lives in ``$BIOCAP_CACHE/predict/published/`` (see
:func:`biocap_core.cache.cache_dir`), one folder per model, Hub revision and weights fingerprint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from biocap_core.cache import cache_dir
from tqdm import tqdm

from biocap_predict.errors import TaxaIndexError
from biocap_predict.index import TaxaIndex, weights_fingerprint

Echo = Callable[[str], None]


@dataclass(frozen=True)
class PublishedTol:
    """Where a released model's tree-of-life text embeddings are on the Hub (where pybioclip gets
    them)."""

    model: str  #: the model as ``--model`` names it
    repo_id: str
    matrix: str  #: (dim, taxa) float matrix, ``.npy``
    names: str  #: ``[[kingdom, ..., genus, epithet], common name]`` per column, ``.json``
    repo_type: str = "dataset"

    @property
    def files(self) -> tuple[str, str]:
        return self.matrix, self.names

    def fetch(self, echo: Echo = print) -> TolFiles:
        """The two files, from the Hugging Face cache, downloaded first if they are not in it (the
        download is announced through ``echo`` with each file's size, from the Hub's metadata)."""
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        where = f"{self.repo_type} {self.repo_id}"
        try:
            if not constants.HF_HUB_OFFLINE:
                self._announce(echo)
            paths = [Path(hf_hub_download(self.repo_id, name, repo_type=self.repo_type))
                     for name in self.files]
        except LocalEntryNotFoundError as exc:
            why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
                   else f"the Hugging Face Hub cannot be reached ({_first_line(exc)})")
            raise TaxaIndexError(
                f"{self.model}: its tree-of-life text embeddings ({where}: "
                f"{', '.join(self.files)}) are not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and {why}; run once with network access, or pass "
                "--index IDX") from exc
        except HfHubHTTPError as exc:
            raise TaxaIndexError(f"{self.model}: cannot download its tree-of-life text embeddings "
                                 f"from {where}: {_first_line(exc)}") from exc
        # the cache keeps each file at .../snapshots/<commit>/<path in the repo>
        revision = paths[0].parents[len(PurePosixPath(self.matrix).parts) - 1].name
        return TolFiles(self, paths[0], paths[1], revision)

    def _announce(self, echo: Echo) -> None:
        """Say what is about to be downloaded and how big it is (the Hub's metadata), before it
        starts; nothing when the cache holds the Hub's latest revision."""
        from huggingface_hub import constants
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        coming = []
        for name in self.files:
            try:
                missing, size = _pending(self.repo_id, name, self.repo_type)
            except (HfHubHTTPError, LocalEntryNotFoundError, OSError):
                return  # the download itself falls back on the cache or says what went wrong
            if missing:
                coming.append((name, size))
        if coming:
            total = _size(sum(size or 0 for _, size in coming))
            sizes = ", ".join(f"{name} ({_size(size)})" for name, size in coming)
            echo(f"downloading the tree-of-life text embeddings of {self.model} (once, {total} "
                 f"in all) from the Hugging Face Hub, {self.repo_type} {self.repo_id}: {sizes}; "
                 f"kept in {constants.HF_HUB_CACHE}")


@dataclass(frozen=True)
class TolFiles:
    """A published pair in the Hugging Face cache, at one Hub revision."""

    published: PublishedTol
    matrix: Path
    names: Path
    revision: str

    def index(self, model, *, model_name: str = "", fingerprint: str | None = None,
              echo: Echo = print) -> TaxaIndex:
        """The pair as a taxa index for ``model``: imported the first time, then read back as it
        is (``fingerprint``: the model's weights fingerprint, when the caller has it already)."""
        fingerprint = fingerprint or weights_fingerprint(model)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.published.model.removeprefix("hf-hub:"))
        out = (cache_dir() / "predict" / "published" / slug.strip("-")
               / f"{self.revision[:12]}-{fingerprint[:16]}")
        if _imported(out, fingerprint, self.matrix):
            index = TaxaIndex.load(out)
            echo(f"taxa index: the published tree of life of {self.published.model}, "
                 f"{len(index):,} taxa ({out})")
            return index
        echo(f"importing the tree-of-life text embeddings as a taxa index (once): {out}")
        return TaxaIndex.from_tol(model, self.matrix, out,
                                  model_name=model_name or self.published.model)


#: The released models whose tree-of-life text embeddings are published, by ``--model`` name.
PUBLISHED = {p.model: p for p in (
    PublishedTol("hf-hub:imageomics/bioclip", "imageomics/TreeOfLife-10M",
                 "embeddings/txt_emb_species.npy", "embeddings/txt_emb_species.json"),
    PublishedTol("hf-hub:imageomics/bioclip-2", "imageomics/TreeOfLife-200M",
                 "embeddings/txt_emb_species.npy", "embeddings/txt_emb_species.json"),
    PublishedTol("hf-hub:imageomics/biocap", "imageomics/TreeOfLife-10M",
                 "embeddings/txt_emb_biocap.npy", "embeddings/txt_emb_biocap.json"),
)}


def published_for(model: str) -> PublishedTol:
    """The published embeddings of ``model``; for any other model, an error saying how to build a
    taxa index for it."""
    found = PUBLISHED.get(model.strip().lower())
    if found is None:
        raise TaxaIndexError(
            f"no --index given, and {model} has no published tree-of-life embeddings (only "
            f"{', '.join(PUBLISHED)} do). Build a taxa index for it once: biocap-predict index "
            f"--model {model} [--pretrained CKPT] --taxa catalog.parquet --out IDX (a catalog, "
            "species CSV or any table with the 7 ranks), then predict with --index IDX; or give "
            "--labels or --bins")
    return found


def published_index(model_name: str, model, *, echo: Echo = print) -> TaxaIndex:
    """The published tree of life of ``model_name`` (e.g. ``hf-hub:imageomics/biocap``) as a taxa
    index for its loaded ``model``: fetched and imported on first use, reused afterwards."""
    return published_for(model_name).fetch(echo).index(model, model_name=model_name, echo=echo)


def announce_weights(model: str, echo: Echo = print) -> None:
    """Before an ``hf-hub:`` model first loads, say which weights file is downloaded and how big
    (OpenCLIP takes the repo's safetensors file when it has one, else the ``.bin``); nothing when
    the cache holds them, offline, or for a model that is not on the Hub."""
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if not model.startswith("hf-hub:") or constants.HF_HUB_OFFLINE:
        return
    for name in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME):
        try:
            missing, size = _pending(model.removeprefix("hf-hub:"), name)
        except LocalEntryNotFoundError:  # no answer from the Hub: the load says what went wrong
            return
        except EntryNotFoundError:  # the repo has no such file: OpenCLIP tries the next
            continue
        except (HfHubHTTPError, OSError):
            return
        if missing:
            echo(f"downloading the weights of {model} (once) from the Hugging Face Hub: {name} "
                 f"({_size(size)}); kept in {constants.HF_HUB_CACHE}")
        return


def _pending(repo_id: str, name: str, repo_type: str | None = None) -> tuple[bool, int | None]:
    """Whether a download of ``name`` would fetch it (the cache lacks the Hub's latest revision),
    and its size: one request to the Hub, whose errors are raised as huggingface_hub raises them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    meta = get_hf_file_metadata(hf_hub_url(repo_id, name, repo_type=repo_type))
    cached = try_to_load_from_cache(repo_id, name, revision=meta.commit_hash, repo_type=repo_type)
    return not isinstance(cached, str), meta.size


def _imported(out: Path, fingerprint: str, matrix: Path) -> bool:
    try:
        meta = json.loads((out / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (meta.get("model_fingerprint") == fingerprint
            and meta.get("inputs", {}).get("tol") == str(matrix.absolute()))


def _size(n: int | None) -> str:
    return "size unknown" if n is None else tqdm.format_sizeof(n, "B", 1000)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
