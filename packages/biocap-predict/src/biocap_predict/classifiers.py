"""pybioclip's classes over :class:`~biocap_predict.Predictor`, so its users switch by changing an import.

``from bioclip import TreeOfLifeClassifier, Rank`` becomes ``from biocap_predict import ...``; the
constructors take pybioclip's ``model_str``/``pretrained_str``/``device`` and ``predict`` returns its
rows. Differences: the tree of life comes from a taxa index built for the model (``index=`` or the
``BIOCAP_PREDICT_INDEX`` environment variable) instead of a download, and ``get_label_data`` returns a
polars DataFrame.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from biocap_core.taxonomy import RANKS, SPECIES
from biocap_predict.errors import PredictInputError
from biocap_predict.filters import matching
from biocap_predict.index import TaxaIndex
from biocap_predict.predictor import Predictor, bins_of

BIOCAP_MODEL_STR = "hf-hub:imageomics/biocap"
INDEX_ENV = "BIOCAP_PREDICT_INDEX"


class _RankLabel:
    def get_label(self) -> str:
        """The rank's name in rows and in core's ``RANKS``."""
        return self.name.lower()


#: pybioclip's ranks, ``Rank.KINGDOM`` (0) to ``Rank.SPECIES`` (6): core's list of ranks by level.
Rank = Enum("Rank", [(name.upper(), level) for level, name in enumerate(RANKS)], type=_RankLabel,
            module=__name__)


def _as_list(images: Any) -> list:
    return [images] if isinstance(images, (str, os.PathLike)) else list(images)


class BaseClassifier:
    """Loads the model through core (any OpenCLIP name/tag, hf-hub:, local-dir: or checkpoint file)."""

    def __init__(self, model_str: str = BIOCAP_MODEL_STR, pretrained_str: str | None = None, device: str = "cpu",
                 index: str | os.PathLike | TaxaIndex | None = None):
        self.model_str, self.pretrained_str, self.device = model_str, pretrained_str, device
        self.predictor = Predictor.from_pretrained(model_str, pretrained_str, index, device=str(device))

    def _batched(self, batch_size: int | None) -> Predictor:
        self.predictor.batch_size = batch_size or self.predictor.batch_size
        return self.predictor


class TreeOfLifeClassifier(BaseClassifier):
    """Open-ended prediction over a taxa index; higher ranks sum species probabilities."""

    def __init__(self, index: str | os.PathLike | TaxaIndex | None = None, **kwargs: Any):
        index = index or os.environ.get(INDEX_ENV)
        if index is None:
            raise PredictInputError(f"TreeOfLifeClassifier needs a taxa index: pass index=PATH or set {INDEX_ENV} "
                                    "(build one with `biocap-predict index`)")
        super().__init__(index=index, **kwargs)
        self._full = self.predictor.index

    def predict(self, images: Any, rank: Rank | str, min_prob: float = 1e-9, k: int = 5,
                batch_size: int = 10) -> list[dict]:
        """pybioclip's rows: names down to ``rank`` then ``score`` (species rows add the epithet, binomial
        and common name). ``min_prob`` is accepted for compatibility; probabilities here are exact sums."""
        level = Rank[rank.upper()] if isinstance(rank, str) else rank
        keys = ["file_name", *RANKS[:min(level.value + 1, SPECIES)]]
        if level is Rank.SPECIES:
            keys += ["species_epithet", "species", "common_name"]
        rows = self._batched(batch_size).predict(_as_list(images), rank=level.get_label(), k=k)
        return [{key: row[key] for key in [*keys, "score"]} for row in rows]

    def get_label_data(self):
        """Every taxon of the (filtered) index: ranks, species epithet, binomial, common name."""
        import polars as pl

        taxa = self.predictor.index.taxa
        return taxa.select(*RANKS[:SPECIES], pl.col("species").alias("species_epithet"),
                           self.predictor.index.binomials().alias("species"), "common_name")

    def create_taxa_filter(self, rank: Rank, user_values: Sequence[str]) -> list[bool]:
        """True for taxa whose ``rank`` name is one of ``user_values``; unknown names are an error."""
        return matching(self._full, {rank.get_label(): list(user_values)}).tolist()

    def apply_filter(self, keep_labels_ary: Iterable[bool] | None) -> None:
        """Restrict later predictions to the taxa marked True (None restores the whole index)."""
        self.predictor.use_index(self._full if keep_labels_ary is None else self._full.select(
            np.asarray(list(keep_labels_ary), dtype=bool)))


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot over your own labels (each through the zero-shot templates)."""

    def __init__(self, cls_ary: Iterable[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.classes = [c.strip() for c in cls_ary]

    def _classify(self, images: Any, k: int | None, batch_size: int, **label_source) -> list[dict]:
        return self._batched(batch_size).classify(_as_list(images), k=k or len(self.classes), **label_source)

    def predict(self, images: Any, k: int | None = None, batch_size: int = 10) -> list[dict]:
        """Rows ``file_name, classification, score``; all labels when ``k`` is None."""
        return self._classify(images, k, batch_size, labels=self.classes)


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """Custom labels whose probabilities are summed into bins (``{label: bin}``)."""

    def __init__(self, cls_to_bin: Mapping[str, str], **kwargs: Any):
        if any(not isinstance(b, str) or not b.strip() for b in cls_to_bin.values()):
            raise ValueError("Empty, null, or nan are not allowed for bin values.")
        super().__init__(cls_ary=cls_to_bin.keys(), **kwargs)
        self.bins = bins_of(cls_to_bin.items())

    def predict(self, images: Any, k: int | None = None, batch_size: int = 10) -> list[dict]:
        return self._classify(images, k or len(self.bins), batch_size, bins=self.bins)
