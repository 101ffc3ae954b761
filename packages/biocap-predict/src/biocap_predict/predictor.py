"""The Python API: a model plus (optionally) a taxa index, predicting from images or stored
embeddings.

Every method streams: images are decoded and encoded a batch at a time, and rows are made for a
block of :data:`SCORE_IMAGES` images before more are read, so memory does not grow with the number
of images (the ``iter_`` methods hand each block's rows out as a polars DataFrame; the list methods
collect them as dicts, pybioclip's rows).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from tqdm import tqdm

from biocap_core.gpu_decode import require_cuda
from biocap_core.imagefiles import ImageFiles, encoded_batches
from biocap_core.runtime import default_precision, resolve_device
from biocap_core.taxonomy import RANKS, SPECIES, TEMPLATES
from biocap_core.zeroshot import classifier_weights
from biocap_predict.errors import ImageError, PredictInputError
from biocap_predict.filters import parse_within, restrict
from biocap_predict.images import name_inputs
from biocap_predict.index import TaxaIndex, weights_fingerprint
from biocap_predict.priors import Prior, as_prior
from biocap_predict.references import References, reference_photos
from biocap_predict.rows import (
    TaxonNames,
    caption_rows,
    label_rows,
    parse_rank,
    rollup_frame,
    taxon_rows,
)
from biocap_predict.scoring import TopK, label_topk, rank_topk, rollup

Features = dict[str, torch.Tensor]
#: Images scored together (see :meth:`_Task.over`).
SCORE_IMAGES = 256
OnSkip = Callable[[ImageError], None] | None
#: Called after each batch with the images processed so far and their total (pybioclip's callback).
Progress = Callable[[int, int], None] | None


@dataclass
class _Task:
    """What to do with the embeddings of the images: the heads it needs and the function making
    rows."""

    heads: tuple[str, ...]
    rows: Callable[[list[str], Features], pl.DataFrame]

    def over(self, encoded: Iterable[tuple[list[str], Features]]) -> Iterator[pl.DataFrame]:
        """The rows of the encoded batches, in order, made for :data:`SCORE_IMAGES` images or more
        at a time: scoring and making rows cost nearly as much for 32 images as for 256 (the fixed
        costs of small ops and of polars calls), so this takes about 0.85 ms a batch of 32 off the
        process that runs the forward pass on the CPU (0.43 instead of 1.28 ms, measured with
        ``benchmarks/predict_throughput.py``'s setup). Memory holds that many images' embeddings,
        not more."""
        names: list[str] = []
        parts: list[Features] = []
        for batch_names, feats in encoded:
            names += batch_names
            parts.append(feats)
            if len(names) >= SCORE_IMAGES:
                yield self.rows(names, _joined(parts))
                names, parts = [], []
        if names:
            yield self.rows(names, _joined(parts))


def _runtime(
    device: str | torch.device, precision: str | None, gpu_decode: bool
) -> tuple[torch.device, str]:
    """Where and at what precision a predictor runs: ``auto`` is CUDA when available, precision amp
    on GPU and fp32 on CPU; ``gpu_decode`` off CUDA is refused here, before any model loads."""
    resolved = torch.device(resolve_device(str(device)))
    if gpu_decode:
        require_cuda(resolved)
    return resolved, precision or default_precision(str(resolved))


def _joined(parts: list[Features]) -> Features:
    return parts[0] if len(parts) == 1 else {h: torch.cat([p[h] for p in parts]) for h in parts[0]}


class Predictor:
    """A BioCAP model ready to predict: open-ended over a :class:`TaxaIndex`, or over custom labels.

    ``device`` ``"auto"`` picks CUDA when available; ``precision`` defaults to amp on GPU, fp32 on
    CPU. ``gpu_decode`` decodes JPEGs on the device (CUDA only; refused elsewhere with
    :class:`~biocap_core.errors.GpuDecodeUnavailable`). ``jpeg_draft`` False decodes large JPEGs at
    full size before the resize (slower; the pixels pybioclip computes) instead of at the smallest
    DCT scale that keeps the crop's size.
    """

    def __init__(
        self,
        model,
        index: TaxaIndex | str | os.PathLike | None = None,
        *,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 32,
        workers: int = 0,
        templates: Sequence[str] | None = None,
        progress: bool = False,
        model_name: str = "the model",
        gpu_decode: bool = False,
        jpeg_draft: bool = True,
    ):
        self.device, self.precision = _runtime(device, precision, gpu_decode)
        self.gpu_decode, self.jpeg_draft = gpu_decode, jpeg_draft
        self.model = model.to(self.device).eval()
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.templates = tuple(templates or TEMPLATES)
        self.model_name = model_name
        self._labels: dict[tuple[str, ...], torch.Tensor] = {}
        self.use_index(index)

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        pretrained: str | None = None,
        index: str | Path | TaxaIndex | None = None,
        *,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> Predictor:
        """Load any model core can load (OpenCLIP name/tag, hf-hub:, local-dir:, a checkpoint
        file)."""
        from biocap_core.checkpoints import load_model

        device, precision = _runtime(device, precision, kwargs.get("gpu_decode", False))
        net = load_model(model, pretrained, device=device, precision=precision)
        label = model + (f" ({pretrained})" if pretrained else "")
        return cls(
            net,
            index,
            device=device,
            precision=precision,
            batch_size=batch_size,
            model_name=label,
            **kwargs,
        )

    @cached_property
    def fingerprint(self) -> str:
        """The weights fingerprint an index must have been built with."""
        return weights_fingerprint(self.model)

    # ---- encoding ----
    def _encode(
        self,
        images: Iterable[Any],
        heads: Sequence[str],
        on_skip: OnSkip,
        normalize: bool = True,
        callback: Progress = None,
    ) -> Iterator[tuple[list[str], Features]]:
        items = name_inputs(images)
        dataset = ImageFiles(
            [item.data for item in items],
            self.model,
            gpu_decode=self.gpu_decode,
            draft=self.jpeg_draft,
        )
        bar = tqdm(total=len(items), unit="img", desc="images", disable=not self.progress)
        done = 0
        with bar:
            for batch, feats in encoded_batches(
                self.model,
                dataset,
                heads,
                self.batch_size,
                self.workers,
                self.device,
                self.precision,
                normalize,
            ):
                for position, why in batch.unreadable:
                    error = ImageError(f"{items[position].name}: {why}")
                    if on_skip is None:
                        raise error
                    on_skip(error)
                bar.update(len(batch.positions) + len(batch.unreadable))
                done += len(batch.positions) + len(batch.unreadable)
                if callback is not None:
                    callback(done, len(items))
                if feats:
                    yield [items[p].name for p in batch.positions], feats

    def embed(
        self,
        images: Iterable[Any],
        head: str = "tax",
        normalize: bool = True,
        on_skip: OnSkip = None,
        callback: Progress = None,
    ) -> Iterator[tuple[list[str], Features]]:
        """Image embeddings per batch: (names, {head: (batch, dim)}); ``head`` is tax, caption or
        both; ``callback`` as in :meth:`predict`."""
        heads = ("tax", "caption") if head == "both" else (head,)
        if not set(heads) <= {"tax", "caption"}:
            raise PredictInputError(f"unknown head {head!r}; expected tax, caption or both")
        for names, feats in self._encode(images, heads, on_skip, normalize, callback):
            yield names, {h: f.cpu() for h, f in feats.items()}

    # ---- tree of life ----
    def use_index(self, index: TaxaIndex | str | os.PathLike | None) -> None:
        """Predict over ``index`` from now on (refused when it was built with other weights)."""
        index = TaxaIndex.load(index) if isinstance(index, (str, os.PathLike)) else index
        if index is not None:
            index.check_model(self.fingerprint, self.model_name)
        self.index = index
        self._views: dict[Any, tuple[TaxaIndex, torch.Tensor, TaxonNames]] = {}
        self._captions: torch.Tensor | None = None
        self._bias: tuple[Any, torch.Tensor] | None = None  # the last prior's, for its view
        path = getattr(index, "path", None)
        self.references: References | None = (
            References.load(path, index.binomials().to_list()) if path else None
        )

    def _prior_bias(self, within: Any, prior: Prior | None) -> torch.Tensor | None:
        """The log-weights of ``prior`` for the taxa of the view ``within`` (the last one kept)."""
        if prior is None:
            return None
        view, _, _ = self._view(within)
        key = (id(view), prior)
        if self._bias is None or self._bias[0] != key:
            self._bias = (key, prior.log_weights(view.taxa).to(self.device))
        return self._bias[1]

    def _view(self, within: Any) -> tuple[TaxaIndex, torch.Tensor, TaxonNames]:
        """The index restricted by ``within``, its text matrix on the device and its hits' names
        (cached)."""
        if self.index is None:
            raise PredictInputError(
                "no taxa index: pass index= (or --index) for open-ended prediction"
            )
        filters = parse_within(within)
        key = tuple(sorted((k, tuple(v)) for k, v in filters.items()))
        if key not in self._views:
            view = restrict(self.index, filters)
            self._views[key] = (
                view,
                view.embeddings.to(self.device, torch.float32),
                TaxonNames(view.taxa),
            )
        return self._views[key]

    def _tree_task(
        self,
        rank: str,
        k: int,
        within: Any,
        captions: int,
        min_prob: float = 0.0,
        rollup_at: float | None = None,
        prior: Any = None,
    ) -> _Task:
        levels = parse_rank(rank)
        view, text, names_of = self._view(within)
        if captions and not view.has_captions:
            raise PredictInputError(
                f"{view.path or 'the index'} has no trait captions; build it with --captions"
            )
        if rollup_at is not None and not 0 < rollup_at <= 1:
            raise PredictInputError(f"rollup must be a probability in (0, 1], not {rollup_at}")
        bias = self._prior_bias(within, as_prior(prior))
        scale = self.model.logit_scale.exp().item()
        # the rollup needs every rank's best taxon, from the plain sums (not min_prob's)
        every_rank = tuple(range(len(RANKS)))
        scored = every_rank if rollup_at is not None and not min_prob else levels

        def rows(names: list[str], feats: Features) -> pl.DataFrame:
            args = (feats["tax"], text, scale, view.groups)
            tops = rank_topk(*args, scored, k, min_prob=min_prob, bias=bias)
            rolled = None
            if rollup_at is not None:
                every = rank_topk(*args, every_rank, 1, bias=bias) if min_prob else tops
                rolled = rollup_frame(names_of, view.groups.first, *rollup(every, rollup_at))
            nearest = (
                caption_rows(names, self._nearest(feats["caption"], captions), self.index.captions)
                if captions
                else None
            )
            tops = {lv: tops[lv] for lv in levels}
            frame = taxon_rows(names_of, view.groups.first, names, tops, nearest, rolled)
            # a group no species above min_prob falls in has no row, as in pybioclip
            if min_prob:
                frame = frame.filter(~pl.col("rank").is_in(RANKS[:-1]) | (pl.col("score") > 0))
            return frame

        return _Task(("tax", "caption") if captions else ("tax",), rows)

    def iter_predict(
        self,
        images: Iterable[Any],
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        *,
        captions: int = 0,
        on_skip: OnSkip = None,
        min_prob: float = 0.0,
        callback: Progress = None,
        rollup: float | None = None,
        prior: Any = None,
    ) -> Iterator[pl.DataFrame]:
        """The rows of each block of images (see :meth:`predict`) as a DataFrame; ``captions`` adds
        that many nearest captions per image (rows with ``rank`` ``caption`` and a ``caption``
        column).
        """
        task = self._tree_task(rank, k, within, captions, min_prob, rollup, prior)
        yield from task.over(self._encode(images, task.heads, on_skip, callback=callback))

    def predict(
        self,
        images: Iterable[Any],
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        *,
        on_skip: OnSkip = None,
        min_prob: float = 0.0,
        callback: Progress = None,
        rollup: float | None = None,
        prior: Any = None,
    ) -> list[dict]:
        """One row per (image, rank, hit), sorted by image, rank (kingdom first) and score.

        Higher ranks sum the species probabilities of the index (restricted by ``within``, e.g.
        ``"order=Lepidoptera"``) before taking the top ``k``; with ``min_prob``, only those above it
        (pybioclip's ``min_prob``), so a rank may have fewer than ``k`` rows. An undecodable image
        raises :class:`ImageError`, unless ``on_skip`` is given: then it is passed the error and
        skipped. ``callback(processed, total)`` is called after each batch of images.

        ``rollup=T`` adds :data:`~biocap_predict.rows.ROLLUP_COLUMNS` to each row: the deepest rank
        whose best taxon has probability >= T (species when the model is sure, else genus, family
        ...). ``prior`` (a :class:`~biocap_predict.priors.Prior`, or a ``rank,name,weight`` CSV
        path or DataFrame) multiplies the species probabilities by its weights and renormalises
        them before anything is ranked.
        """
        blocks = self.iter_predict(
            images,
            rank,
            k,
            within,
            on_skip=on_skip,
            min_prob=min_prob,
            callback=callback,
            rollup=rollup,
            prior=prior,
        )
        return [row for rows in blocks for row in rows.to_dicts()]

    def iter_predict_observations(
        self,
        observations: Mapping[str, Sequence[Any]] | Iterable[tuple[str, Sequence[Any]]],
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        *,
        captions: int = 0,
        on_skip: OnSkip = None,
        callback: Progress = None,
        rollup: float | None = None,
        prior: Any = None,
    ) -> Iterator[pl.DataFrame]:
        """The rows of each block of observations (see :meth:`predict_observations`)."""
        task = self._tree_task(rank, k, within, captions, rollup_at=rollup, prior=prior)
        photos: dict[str, list[str]] = {}
        encoded = self._encode_observations(observations, task.heads, on_skip, callback, photos)
        for frame in task.over(encoded):
            ids = frame["file_name"]
            listed = ids.replace_strict({o: ";".join(photos[o]) for o in ids.unique()})
            frame = frame.rename({"file_name": "observation"})
            yield frame.insert_column(1, listed.alias("photos"))
            for o in ids.unique():
                photos.pop(o, None)

    def predict_observations(
        self,
        observations: Mapping[str, Sequence[Any]] | Iterable[tuple[str, Sequence[Any]]],
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        **kwargs: Any,
    ) -> list[dict]:
        """One prediction per observation (several photos of one organism), as rows of
        :meth:`predict` whose ``file_name`` is replaced by ``observation`` (its id) and ``photos``
        (the photos it combines, joined by ``;``).

        ``observations`` maps an id to its photos (or is a sequence of such pairs). The photos'
        log-probabilities are averaged per species and renormalised: p(s) is proportional to
        exp(mean over photos of log p_photo(s)), so a species must fit every photo, and one blurred
        photo cannot outvote the rest. As a logit is linear in the image embedding, this is the
        softmax of the mean of the photos' unit embeddings, which is how it is computed (a prior
        multiplies the result once). Keyword arguments are those of :meth:`predict`
        (``captions``, ``on_skip``, ``callback``, ``rollup``, ``prior``); an observation none of
        whose photos can be read gets no row (``on_skip`` is told).
        """
        blocks = self.iter_predict_observations(observations, rank, k, within, **kwargs)
        return [row for rows in blocks for row in rows.to_dicts()]

    def _encode_observations(
        self,
        observations: Mapping[str, Sequence[Any]] | Iterable[tuple[str, Sequence[Any]]],
        heads: Sequence[str],
        on_skip: OnSkip,
        callback: Progress,
        photos: dict[str, list[str]],
    ) -> Iterator[tuple[list[str], Features]]:
        """Per finished observation, its id and the mean of its photos' unit embeddings (the
        photos read are put in ``photos``). Photos are encoded in input order, so an observation is
        finished once a photo of a later one comes out."""
        pairs = list(observations.items() if isinstance(observations, Mapping) else observations)
        ids = [str(o) for o, _ in pairs]
        if len(set(ids)) != len(ids):
            raise PredictInputError("observation ids must be unique")
        items, owner = [], deque()  # every photo in order; whose it is, and its name
        for o, (obs, images) in enumerate(pairs):
            named = name_inputs(images)
            if not named:
                raise PredictInputError(f"observation {obs!r} has no photos")
            items += named
            owner += [(o, item.name) for item in named]
        sums: dict[int, Features] = {}
        count: dict[int, int] = {}
        done = 0  # observations before this one are finished

        def finished(upto: int) -> Iterator[tuple[list[str], Features]]:
            nonlocal done
            ready = [o for o in range(done, upto) if o in sums]
            for o in range(done, upto):
                if o not in sums and on_skip is not None:
                    on_skip(ImageError(f"observation {ids[o]}: none of its photos could be read"))
            done = upto
            if ready:
                n = [count.pop(o) for o in ready]
                means = [{h: f / c for h, f in sums.pop(o).items()} for o, c in zip(ready, n)]
                yield (
                    [ids[o] for o in ready],
                    {h: torch.stack([m[h] for m in means]) for h in heads},
                )

        for names, feats in self._encode(items, heads, on_skip, callback=callback):
            for row, name in enumerate(names):
                while True:  # photos skipped as unreadable come out of the queue unused
                    o, queued = owner.popleft()
                    if queued == name:
                        break
                photos.setdefault(ids[o], []).append(name)
                count[o] = count.get(o, 0) + 1
                if o in sums:
                    for h in heads:
                        sums[o][h] += feats[h][row].float()
                else:
                    sums[o] = {h: feats[h][row].float().clone() for h in heads}
            yield from finished(owner[0][0] if owner else len(pairs))
        yield from finished(len(pairs))

    def iter_predict_embeddings(
        self,
        names: Sequence[str],
        features: torch.Tensor | Features,
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        *,
        captions: int = 0,
        rollup: float | None = None,
        prior: Any = None,
    ) -> Iterator[pl.DataFrame]:
        """As :meth:`iter_predict`, from stored image embeddings (``tax`` head; ``caption`` for
        captions)."""
        task = self._tree_task(rank, k, within, captions, rollup_at=rollup, prior=prior)
        yield from self._over_features(task, names, features)

    def predict_embeddings(
        self,
        features: torch.Tensor | Features,
        names: Sequence[str] | None = None,
        rank: str = "all",
        k: int = 5,
        within: Any = None,
        *,
        rollup: float | None = None,
        prior: Any = None,
    ) -> list[dict]:
        names = names or [str(i) for i in range(_rows_of(features))]
        blocks = self.iter_predict_embeddings(
            names, features, rank, k, within, rollup=rollup, prior=prior
        )
        return [r for rows in blocks for r in rows.to_dicts()]

    def _over_features(self, task: _Task, names: Sequence[str], features: torch.Tensor | Features):
        feats = features if isinstance(features, Mapping) else {"tax": features}
        missing = [h for h in task.heads if h not in feats]
        if missing:
            raise PredictInputError(
                f"the embeddings lack the {missing} head(s); embed with --head both"
            )
        dim = self.model.visual.proj.shape[1]
        for head in task.heads:
            if (
                feats[head].ndim != 2
                or feats[head].shape[1] != dim
                or feats[head].shape[0] != len(names)
            ):
                raise PredictInputError(
                    f"{head} embeddings of shape {tuple(feats[head].shape)} do not fit "
                    f"{len(names)} names and the model's dimension {dim}"
                )
        size = self.batch_size
        yield from task.over(
            (
                list(names[s : s + size]),
                {
                    h: F.normalize(feats[h][s : s + size].to(self.device).float(), dim=-1)
                    for h in task.heads
                },
            )
            for s in range(0, len(names), size)
        )

    # ---- trait captions ----
    def _nearest(self, caption_feats: torch.Tensor, k: int) -> TopK:
        """Per image, the ``k`` captions of the index nearest under the caption head (cosine
        scores)."""
        if self._captions is None:
            self._captions = self.index.caption_embeddings.to(self.device, torch.float32)
        scores, ids = (caption_feats @ self._captions.T).topk(
            min(k, len(self.index.captions)), dim=1
        )
        return TopK(scores, ids)

    def nearest_captions(
        self, images: Iterable[Any], k: int = 5, *, on_skip: OnSkip = None
    ) -> list[list[dict]]:
        """Per image, the ``k`` trait captions of the index closest to it under the caption head
        (``caption``, cosine ``score``)."""
        if self.index is None or not self.index.has_captions:
            raise PredictInputError(
                f"{getattr(self.index, 'path', None) or 'the index'} has no trait captions; "
                "build it with `biocap-predict index --captions`"
            )
        captions, out = self.index.captions, []
        for _, feats in self._encode(images, ("caption",), on_skip):
            top = self._nearest(feats["caption"], k)
            out += [
                [{"caption": captions[i], "score": s} for s, i in zip(srow, irow)]
                for srow, irow in zip(top.scores.tolist(), top.ids.tolist())
            ]
        return out

    # ---- reference photos ----
    def add_references(
        self, folder: str | os.PathLike, per_taxon: int = 3, *, on_skip: OnSkip = None
    ) -> References:
        """Link the first ``per_taxon`` photos of each species sub-folder of ``folder`` to the
        index, with their embeddings, and keep them beside it (:mod:`biocap_predict.references`)."""
        if self.index is None or self.index.path is None:
            raise PredictInputError("reference photos need a taxa index saved in a folder")
        binomials = self.index.binomials().to_list()
        photos = reference_photos(folder, binomials, per_taxon)
        row_of = dict(zip(photos["path"], photos["row"]))
        names, feats = [], []
        for batch, f in self.embed(photos["path"].to_list(), on_skip=on_skip):
            names += batch
            feats.append(f["tax"])
        if not names:
            raise PredictInputError(f"{folder}: none of the reference photos could be read")
        rows = np.array([row_of[n] for n in names])
        refs = References(rows, [binomials[r] for r in rows], names, torch.cat(feats))
        refs.save(self.index.path)
        self.references = refs
        return refs

    def nearest_references(self, images: Iterable[Any], k: int = 3) -> list[list[dict]]:
        """Per image, up to ``k`` reference photos of its likeliest species, most alike first
        (``id``, ``path``, ``species``, cosine ``score``); empty lists when the index has none."""
        view, text, names_of = self._view(None)
        scale = self.model.logit_scale.exp().item()
        out = []
        for _, feats in self._encode(images, ("tax",), None):
            top = rank_topk(feats["tax"], text, scale, view.groups, (SPECIES,), 1)[SPECIES]
            for image, row in zip(feats["tax"], top.ids[:, 0].tolist()):
                mine = self.references.of_species(row) if self.references else np.array([], int)
                if not len(mine):
                    out.append([])
                    continue
                scores = self.references.embeddings[mine].to(image.device) @ image.float()
                best = scores.argsort(descending=True)[:k].tolist()
                species = names_of([row], [SPECIES])[0][-2]
                out.append(
                    [
                        {
                            "id": int(mine[b]),
                            "path": self.references.paths[mine[b]],
                            "species": species,
                            "score": float(scores[b]),
                        }
                        for b in best
                    ]
                )
        return out

    # ---- custom labels and bins ----
    def label_embeddings(self, labels: Sequence[str]) -> torch.Tensor:
        """(labels, dim) unit rows on the device: per label, the re-normalised mean over the
        templates (kept for the next call with the same labels)."""
        key = tuple(labels)
        if key not in self._labels:
            weights = classifier_weights(
                self.model, key, self.templates, device=self.device, precision=self.precision
            )
            self._labels[key] = weights.T.contiguous().to(self.device)
        return self._labels[key]

    def _label_task(
        self, labels: Sequence[str] | None, bins: Mapping[str, Sequence[str]] | None, k: int
    ) -> _Task:
        if (labels is None) == (bins is None):
            raise PredictInputError("give exactly one of labels or bins")
        names, bin_ids, bin_names = _label_space(labels, bins)
        text, scale = self.label_embeddings(names), self.model.logit_scale.exp().item()
        shown = bin_names or names

        def rows(batch_names: list[str], feats: Features) -> pl.DataFrame:
            return label_rows(
                batch_names,
                label_topk(feats["tax"], text, scale, k, bin_ids, len(bin_names)),
                shown,
            )

        return _Task(("tax",), rows)

    def iter_classify(
        self,
        images: Iterable[Any],
        labels: Sequence[str] | None = None,
        bins: Mapping[str, Sequence[str]] | None = None,
        k: int = 5,
        *,
        on_skip: OnSkip = None,
        callback: Progress = None,
    ) -> Iterator[pl.DataFrame]:
        task = self._label_task(labels, bins, k)
        yield from task.over(self._encode(images, task.heads, on_skip, callback=callback))

    def classify(
        self,
        images: Iterable[Any],
        labels: Sequence[str] | None = None,
        bins: Mapping[str, Sequence[str]] | None = None,
        k: int = 5,
        *,
        on_skip: OnSkip = None,
        callback: Progress = None,
    ) -> list[dict]:
        """Rows ``file_name, classification, score``: the top ``k`` labels, or bins (``{bin:
        [labels]}``, probabilities of a bin's labels summed), per image. Label texts go through the
        templates; ``callback`` as in :meth:`predict`."""
        blocks = self.iter_classify(images, labels, bins, k, on_skip=on_skip, callback=callback)
        return [r for rows in blocks for r in rows.to_dicts()]

    def iter_classify_embeddings(
        self,
        names: Sequence[str],
        features: torch.Tensor | Features,
        labels: Sequence[str] | None = None,
        bins: Mapping[str, Sequence[str]] | None = None,
        k: int = 5,
    ) -> Iterator[pl.DataFrame]:
        yield from self._over_features(self._label_task(labels, bins, k), names, features)


def bins_of(label_bins: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``{bin: [labels]}``, what :meth:`Predictor.classify` takes as ``bins``, from (label, bin)
    pairs (a bins CSV's rows, or pybioclip's ``{label: bin}.items()``): names stripped, bins in
    order of first appearance."""
    bins: dict[str, list[str]] = {}
    for label, bin_name in label_bins:
        bins.setdefault(bin_name.strip(), []).append(label.strip())
    return bins


def _rows_of(features: torch.Tensor | Features) -> int:
    return (next(iter(features.values())) if isinstance(features, Mapping) else features).shape[0]


def _label_space(labels, bins) -> tuple[list[str], torch.Tensor | None, list[str]]:
    """Label texts, and for bins each label's bin id and the bin names."""
    if labels is not None:
        names = [str(label).strip() for label in labels]
        if not names or not all(names):
            raise PredictInputError("the label list is empty or has empty labels")
        return names, None, []
    names, ids, bin_names = [], [], []
    for b, (bin_name, members) in enumerate(bins.items()):
        members = [str(m).strip() for m in ([members] if isinstance(members, str) else members)]
        if not str(bin_name).strip() or not members or not all(members):
            raise PredictInputError(f"bin {bin_name!r} has no name or no labels")
        bin_names.append(str(bin_name))
        names += members
        ids += [b] * len(members)
    if len(set(names)) != len(names):
        raise PredictInputError("a label appears in more than one bin")
    return names, torch.tensor(ids), bin_names
