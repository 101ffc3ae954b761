"""Regional priors: a weight per taxon (at any rank) that multiplies the predicted probabilities.

Where ``--within``/``--subset`` drop taxa before the softmax (a hard restriction), a prior only
reweights them: each species' probability is multiplied by its weight and the products are
renormalised to sum to 1 over the index, so a species the region never recorded can still win when
the photo is clear enough. Occurrence counts of a GBIF download for the region are such weights.

How a species gets its weight:

- the weight of the deepest taxon the prior names on its lineage: a species row wins over its
  genus row, a genus row over its family row, and so on. A weight at genus (family ...) applies as
  it is to every species under it (it is not shared out among them), so genus ``Quercus 50`` and
  family ``Fagaceae 5`` weigh each oak 50 and every other species of the family 5;
- a species whose lineage the prior does not name gets ``missing``: by default the smallest weight
  the prior gives (as rare as the rarest recorded taxon), never 0, so no taxon is ruled out.

Multiplying probabilities by weights is adding their logarithms to the logits before the softmax,
which is how the scorer applies a prior (:func:`biocap_predict.scoring.rank_topk`'s ``bias``): the
higher ranks then sum the reweighted species as usual.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from biocap_core.taxonomy import RANKS, SPECIES
from biocap_predict.errors import PredictInputError

#: Columns of a prior CSV: the rank of a taxon, its name (species as ``Genus epithet``), its weight.
PRIOR_COLUMNS = ("rank", "name", "weight")


@dataclass(frozen=True)
class Prior:
    """Weights by (rank, lowercased name); ``missing`` for species whose lineage is not named."""

    weights: Mapping[tuple[str, str], float]
    missing: float | None = None
    source: str = "the prior"

    def __post_init__(self):
        if not self.weights:
            raise PredictInputError(f"{self.source}: the prior names no taxon")
        bad = [(k, w) for k, w in self.weights.items() if not (w > 0 and math.isfinite(w))]
        if bad:
            raise PredictInputError(
                f"{self.source}: weights must be positive numbers (use --within to rule taxa "
                f"out); found {bad[:5]}"
            )
        if self.missing is not None and not (self.missing > 0 and math.isfinite(self.missing)):
            raise PredictInputError(f"{self.source}: the missing weight must be positive")

    @classmethod
    def read(cls, source: str | os.PathLike | pl.DataFrame, missing: float | None = None) -> Prior:
        """A prior from a CSV file (``rank,name,weight``), CSV text or a DataFrame of those
        columns."""
        name = "<prior>" if isinstance(source, pl.DataFrame) else str(source)
        if isinstance(source, pl.DataFrame):
            table = source
        else:
            text = str(source)
            is_text = "\n" in text and not isinstance(source, os.PathLike)
            name = "the prior" if is_text else text
            try:
                raw = io.StringIO(text) if is_text else Path(text)
                table = pl.read_csv(raw, infer_schema=False)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise PredictInputError(f"{name}: cannot read the prior CSV: {exc}") from exc
        table = table.rename({c: c.strip().lower() for c in table.columns})
        if not set(PRIOR_COLUMNS) <= set(table.columns):
            raise PredictInputError(
                f"{name}: a prior CSV needs the columns {', '.join(PRIOR_COLUMNS)}; found "
                f"{table.columns}"
            )
        weights: dict[tuple[str, str], float] = {}
        rows = table.select(PRIOR_COLUMNS).iter_rows()
        for line, (rank, taxon, weight) in enumerate(rows, start=2):
            rank, taxon = (rank or "").strip().lower(), (taxon or "").strip().lower()
            if rank not in RANKS or not taxon:
                raise PredictInputError(
                    f"{name}: line {line}: needs a rank ({', '.join(RANKS)}) and a name; "
                    f"found {rank!r}, {taxon!r}"
                )
            try:
                value = float(weight)
            except (TypeError, ValueError):
                raise PredictInputError(
                    f"{name}: line {line}: weight {weight!r} is not a number"
                ) from None
            weights[rank, taxon] = weights.get((rank, taxon), 0.0) + value  # repeated rows add up
        return cls(weights, missing, name)

    def species_weights(self, taxa: pl.DataFrame) -> np.ndarray:
        """(taxa,) the weight of each row of an index's taxa table (see the module doc)."""
        fill = self.missing if self.missing is not None else min(self.weights.values())
        out = np.full(taxa.height, np.nan)
        names = {rank: taxa[rank].str.to_lowercase() for rank in RANKS[:SPECIES]}
        names["species"] = taxa.select(
            pl.concat_str(["genus", "species"], separator=" ").str.strip_chars().str.to_lowercase()
        ).to_series()
        by_rank: dict[str, dict[str, float]] = {}
        for (rank, taxon), weight in self.weights.items():
            by_rank.setdefault(rank, {})[taxon] = weight
        for rank in reversed(RANKS):  # species first: the deepest named taxon decides
            if rank not in by_rank:
                continue
            found = names[rank].replace_strict(by_rank[rank], default=None, return_dtype=pl.Float64)
            found = found.to_numpy()
            take = np.isnan(out) & ~np.isnan(found)
            out[take] = found[take]
        if np.isnan(out).all():
            raise PredictInputError(
                f"{self.source}: none of its {len(self.weights)} taxa is in the index"
            )
        return np.where(np.isnan(out), fill, out)

    def log_weights(self, taxa: pl.DataFrame) -> torch.Tensor:
        """(taxa,) float32 log-weights, what the scorer adds to the logits."""
        return torch.from_numpy(np.log(self.species_weights(taxa))).float()


def as_prior(prior: Prior | str | os.PathLike | pl.DataFrame | None) -> Prior | None:
    """A :class:`Prior` from what the API takes: a Prior, a CSV path or text, or a DataFrame."""
    return prior if prior is None or isinstance(prior, Prior) else Prior.read(prior)
