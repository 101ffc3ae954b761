"""pybioclip's classes over :class:`~biocap_predict.Predictor`: its users switch by changing an
import. ``from bioclip.predict import TreeOfLifeClassifier, Rank`` becomes
``from biocap_predict import ...``: the constructors take pybioclip's ``model_str``,
``pretrained_str`` and ``device``, the classes are ``torch.nn.Module``s with its methods and
attributes, and ``predict`` returns its rows with its scores: images are decoded at full size (no
JPEG draft mode) and custom labels average OpenAI's 80 templates, as pybioclip does. The
difference: the tree of life comes from a taxa index built for the model (``index=`` or the
``BIOCAP_PREDICT_INDEX`` environment variable) instead of a download.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from biocap_core.preprocess import decode_image, image_transform
from biocap_core.taxonomy import GENUS, OPENAI_TEMPLATES, RANKS, SPECIES
from biocap_predict.errors import PredictInputError
from biocap_predict.index import TaxaIndex
from biocap_predict.predictor import Predictor, bins_of

BIOCAP_MODEL_STR = "hf-hub:imageomics/biocap"
INDEX_ENV = "BIOCAP_PREDICT_INDEX"
Callback = Callable[[int, int], None] | None


class _RankLabel:
    def get_label(self) -> str:
        """The rank's name in rows and in core's ``RANKS``."""
        return self.name.lower()


#: pybioclip's ranks, ``Rank.KINGDOM`` (0) to ``Rank.SPECIES`` (6): core's list of ranks by level.
Rank = Enum("Rank", [(name.upper(), level) for level, name in enumerate(RANKS)], type=_RankLabel,
            module=__name__)


def get_rank_labels() -> list[str]:
    """The rank names, kingdom to species."""
    return [rank.get_label() for rank in Rank]


def _as_list(images: Any) -> list:
    return [images] if isinstance(images, (str, os.PathLike)) else list(images)


@contextmanager
def _progress(total: int, callback: Callback) -> Iterator[Callable[[int, int], None]]:
    """pybioclip's progress reporting: ``callback(processed, total)`` after each batch when given,
    else a tqdm bar (disabled when there is a callback)."""
    with tqdm(total=total, unit="images", disable=callback is not None) as bar:
        if callback is not None:
            yield callback
            return
        shown = 0

        def update(processed: int, _total: int) -> None:
            nonlocal shown
            bar.update(processed - shown)
            shown = processed

        yield update


class BaseClassifier(nn.Module):
    """Loads the model through core (an OpenCLIP name/tag, hf-hub:, local-dir: or a checkpoint)."""

    def __init__(
        self,
        model_str: str = BIOCAP_MODEL_STR,
        pretrained_str: str | None = None,
        device: str | torch.device = "cpu",
        index: str | os.PathLike | TaxaIndex | None = None,
    ):
        super().__init__()
        self.model_str, self.pretrained_str, self.device = model_str, pretrained_str, device
        self.predictor = Predictor.from_pretrained(
            model_str,
            pretrained_str,
            index,
            device=str(device),
            templates=OPENAI_TEMPLATES,
            jpeg_draft=False,
        )
        self.model = self.predictor.model
        self.preprocess = image_transform(self.model, train=False)
        self.recorder = None

    def _batched(self, batch_size: int | None) -> Predictor:
        self.predictor.batch_size = batch_size or self.predictor.batch_size
        return self.predictor

    def set_recorder(self, recorder) -> None:
        """Record every prediction in ``recorder`` (``add_prediction(images, **settings)``, as
        pybioclip's ``PredictionRecorder``)."""
        self.recorder = recorder

    def record_event(self, images, **kwargs) -> None:
        if self.recorder:
            self.recorder.add_prediction(images, **kwargs)

    @staticmethod
    def ensure_rgb_image(image: Any):
        """A path or PIL image as an RGB PIL image."""
        return image.convert("RGB") if hasattr(image, "convert") else decode_image(image)

    @torch.no_grad()
    def create_image_features(self, images: Sequence[Any], normalize: bool = True) -> torch.Tensor:
        """(images, dim) embeddings (tax head) on the classifier's device."""
        parts = [feats["tax"] for _, feats in self.predictor.embed(list(images), "tax", normalize)]
        return torch.cat(parts).to(self.predictor.device)

    @torch.no_grad()
    def create_image_features_for_image(self, image: Any, normalize: bool) -> torch.Tensor:
        return self.create_image_features([self.ensure_rgb_image(image)], normalize=normalize)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities over every class (taxon or label) of preprocessed images ``x``
        (differentiable, for Grad-CAM and the like)."""
        features = F.normalize(self.model.encode_image(x), dim=-1)
        return (self.model.logit_scale.exp() * features @ self.txt_embeddings).softmax(dim=1)


class TreeOfLifeClassifier(BaseClassifier):
    """Open-ended prediction over a taxa index; higher ranks sum species probabilities."""

    def __init__(self, index: str | os.PathLike | TaxaIndex | None = None, **kwargs: Any):
        index = index or os.environ.get(INDEX_ENV)
        if index is None:
            raise PredictInputError(
                f"TreeOfLifeClassifier needs a taxa index: pass index=PATH or set {INDEX_ENV} "
                "(build one with `biocap-predict index`)"
            )
        super().__init__(index=index, **kwargs)
        self._full = self.predictor.index

    @cached_property
    def txt_embeddings(self) -> torch.Tensor:
        """(dim, taxa): the text embedding of every taxon of the index, on the device."""
        return self._full.embeddings.T.to(self.predictor.device)

    @cached_property
    def txt_names(self) -> list[list]:
        """Per taxon of the index, ``[[kingdom, ..., genus, epithet], common name]``."""
        return _names(self._full)

    def get_txt_names(self) -> list[list]:
        return self.txt_names

    def get_txt_embeddings(self) -> torch.Tensor:
        """(dim, taxa) of the taxa predictions are made over (after :meth:`apply_filter`)."""
        return self.predictor.index.embeddings.T.to(self.predictor.device)

    def get_current_txt_names(self) -> list[list]:
        return (
            self.txt_names if self.predictor.index is self._full else _names(self.predictor.index)
        )

    def predict(
        self,
        images: Any,
        rank: Rank | str,
        min_prob: float = 1e-9,
        k: int = 5,
        batch_size: int = 10,
        callback: Callback = None,
    ) -> list[dict]:
        """pybioclip's rows: names down to ``rank`` then ``score`` (species rows add the epithet,
        binomial and common name). Higher ranks sum the species above ``min_prob``."""
        level = Rank[rank.upper()] if isinstance(rank, str) else rank
        keys = ["file_name", *RANKS[:min(level.value + 1, SPECIES)]]
        if level is Rank.SPECIES:
            keys += ["species_epithet", "species", "common_name"]
        images = _as_list(images)
        with _progress(len(images), callback) as report:
            rows = self._batched(batch_size).predict(
                images, rank=level.get_label(), k=k, min_prob=min_prob, callback=report
            )
        self.record_event(
            images=images, rank=level.get_label(), min_prob=min_prob, k=k, batch_size=batch_size
        )
        return [{key: row[key] for key in [*keys, "score"]} for row in rows]

    def format_species_probs(self, image_key: str, probs: torch.Tensor, k: int = 5) -> list[dict]:
        """Species rows of the top ``k`` of ``probs`` (one probability per current taxon)."""
        scores, ids = probs.topk(min(k, probs.shape[0]))
        names = self.get_current_txt_names()
        return [
            {"file_name": image_key, **_species_names(names[i]), "score": s}
            for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def get_label_data(self):
        """Every taxon of the index, filtered or not, as a pandas DataFrame (pybioclip's columns:
        the ranks, ``species_epithet``, ``species`` as the binomial and ``common_name``), in the
        index's order, so a mask made from it fits :meth:`apply_filter`."""
        import pandas as pd

        return pd.DataFrame([_species_names(names) for names in self.txt_names])

    def create_taxa_filter(self, rank: Rank, user_values: Iterable[str]) -> np.ndarray:
        """A boolean mask over :meth:`get_label_data`'s rows: True where the name at ``rank``
        (species: the binomial) is one of ``user_values``, matched exactly. An unknown name is a
        ValueError."""
        label = rank.get_label()
        column = [_species_names(names)[label] for names in self.txt_names]
        values = {str(v) for v in user_values}
        unknown = [str(v) for v in user_values if str(v) not in set(column)]
        if unknown:
            raise ValueError(
                f"Unknown {label} received: {', '.join(unknown)}. Only known {label} may be used."
            )
        return np.fromiter((name in values for name in column), dtype=bool, count=len(column))

    def create_taxa_filter_from_csv(self, csv_path: str | os.PathLike) -> np.ndarray:
        """:meth:`create_taxa_filter` of a CSV whose first column is named after a rank."""
        import pandas as pd

        table = pd.read_csv(csv_path)
        column = str(table.columns[0]).lower()
        if column not in get_rank_labels():
            raise ValueError(
                f"The first column of {csv_path} is named '{column}' but must be one of "
                f"{','.join(get_rank_labels())}."
            )
        return self.create_taxa_filter(Rank[column.upper()], table[table.columns[0]].values)

    def apply_filter(self, keep_labels_ary: Iterable[bool] | None) -> None:
        """Restrict later predictions to the taxa marked True, one value per row of
        :meth:`get_label_data` (a list, numpy array or pandas Series); None restores the whole
        index."""
        if keep_labels_ary is None:
            self.predictor.use_index(self._full)
            return
        keep = np.array(
            list(keep_labels_ary) if not hasattr(keep_labels_ary, "__array__") else keep_labels_ary,
            dtype=bool,
        )  # a copy: a pandas mask's array is read-only
        if keep.ndim != 1 or keep.shape[0] != len(self._full):
            raise ValueError(
                f"Invalid keep_embeddings values. This parameter should be a list containing "
                f"{len(self._full)} items (one per row of get_label_data()), not {keep.size}."
            )
        if not keep.any():
            raise ValueError("The filter keeps no taxon: every value is False.")
        self.predictor.use_index(self._full.select(keep))


def _names(index: TaxaIndex) -> list[list]:
    """pybioclip's names of each taxon: ``[[kingdom, ..., genus, epithet], common name]``."""
    return [[list(row[:7]), row[7]] for row in index.taxa.rows()]


def _species_names(names: list) -> dict[str, str]:
    """A taxon's ranks, epithet, binomial and common name from its pybioclip names."""
    ranks, common = names
    return {
        **dict(zip(RANKS[:SPECIES], ranks[:SPECIES], strict=True)),
        "species_epithet": ranks[SPECIES],
        "species": f"{ranks[GENUS]} {ranks[SPECIES]}",
        "common_name": common,
    }


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot over your own labels (each through OpenAI's 80 templates, as pybioclip)."""

    def __init__(self, cls_ary: Iterable[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.classes = [c.strip() for c in cls_ary]

    @property
    def txt_embeddings(self) -> torch.Tensor:
        """(dim, labels): each label's text embedding, on the device."""
        return self.predictor.label_embeddings(self.classes).T

    def _classify(
        self, images: Any, k: int | None, batch_size: int, callback: Callback, **label_source
    ) -> list[dict]:
        images = _as_list(images)
        with _progress(len(images), callback) as report:
            rows = self._batched(batch_size).classify(
                images, k=k or len(self.classes), callback=report, **label_source
            )
        self.record_event(images=images, k=k, batch_size=batch_size)
        return rows

    def predict(
        self, images: Any, k: int | None = None, batch_size: int = 10, callback: Callback = None
    ) -> list[dict]:
        """Rows ``file_name, classification, score``; all labels when ``k`` is None."""
        return self._classify(images, k, batch_size, callback, labels=self.classes)


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """Custom labels whose probabilities are summed into bins (``{label: bin}``)."""

    def __init__(self, cls_to_bin: Mapping[str, str], **kwargs: Any):
        if any(not isinstance(b, str) or not b.strip() for b in cls_to_bin.values()):
            raise ValueError("Empty, null, or nan are not allowed for bin values.")
        super().__init__(cls_ary=cls_to_bin.keys(), **kwargs)
        self.cls_to_bin = cls_to_bin
        self.bins = bins_of(cls_to_bin.items())

    def predict(
        self, images: Any, k: int | None = None, batch_size: int = 10, callback: Callback = None
    ) -> list[dict]:
        return self._classify(images, k or len(self.bins), batch_size, callback, bins=self.bins)
