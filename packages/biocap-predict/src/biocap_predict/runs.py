"""What each command does, as functions: the CLI parses flags and calls exactly one of these.

Each run reads its inputs, streams its outputs a block at a time, reports skipped images through
``echo`` and, with ``log``, writes a provenance record (versions, command, model fingerprint,
inputs, start and end).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from biocap_core.taxonomy import RANKS, read_templates
from biocap_predict.errors import ImageError, PredictInputError
from biocap_predict.filters import parse_within, read_subset
from biocap_predict.hub import announce_weights, published_for
from biocap_predict.images import expand_paths, read_observations
from biocap_predict.index import TaxaIndex
from biocap_predict.outputs import EmbeddingWriter, RowWriter, read_embeddings
from biocap_predict.predictor import Predictor, bins_of
from biocap_predict.priors import Prior
from biocap_predict.provenance import RunLog
from biocap_predict.rows import LABEL_COLUMNS, OBSERVATION_COLUMNS, ROLLUP_COLUMNS, TAXON_COLUMNS

Echo = Callable[[str], None]


@dataclass
class ModelOptions:
    """Which model, and how to run it (as biocap-eval's flags)."""

    model: str
    pretrained: str | None = None
    device: str = "auto"
    precision: str | None = None
    batch_size: int = 32
    workers: int = 0
    progress: bool = True
    gpu_decode: bool = False

    def load(self, index: TaxaIndex | None = None, *, echo: Echo | None = None) -> Predictor:
        """The predictor; through ``echo``, what is downloaded first (:func:`announce_weights`)."""
        if echo is not None:
            announce_weights(self.model, echo)
        return Predictor.from_pretrained(
            self.model,
            self.pretrained,
            index,
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            workers=self.workers,
            progress=self.progress,
            gpu_decode=self.gpu_decode,
        )


@dataclass
class Inputs:
    """Images (files, folders, a list file) or stored embeddings: exactly one kind."""

    paths: Sequence[str] = ()
    recursive: bool = False
    from_list: str | None = None
    embeddings: str | None = None

    def files(self) -> list[str]:
        if self.embeddings and (self.paths or self.from_list):
            raise PredictInputError("give images or --embeddings, not both")
        return [] if self.embeddings else expand_paths(self.paths, self.recursive, self.from_list)


@dataclass
class RunSummary:
    rows: int = 0
    images: int = 0
    skipped: list[str] = field(default_factory=list)


def read_label_list(value: str) -> list[str]:
    """``--labels``: a file with one label per line, or a comma-separated list."""
    path = Path(value)
    if path.is_file():
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not labels:
            raise PredictInputError(f"{path}: the label file is empty")
        return labels
    labels = [v.strip() for v in value.split(",") if v.strip()]
    if not labels:
        raise PredictInputError(
            f"--labels {value!r}: no labels (give 'a,b,c' or a file, one label per line)"
        )
    return labels


def read_bins(path: str | os.PathLike) -> dict[str, list[str]]:
    """``--bins``: a CSV whose first column is a label and second its bin (pybioclip's layout)."""
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PredictInputError(f"{path}: cannot read the bins CSV: {exc}") from exc
    if table.width < 2 or table.height == 0:
        raise PredictInputError(f"{path}: the bins CSV needs rows of two columns: label, bin")
    rows = list(table.select(table.columns[:2]).iter_rows())
    for i, (label, bin_name) in enumerate(rows):
        if not (label or "").strip() or not (bin_name or "").strip():
            raise PredictInputError(f"{path}: row {i + 1} has an empty label or bin")
    return bins_of(rows)


def build_index(
    options: ModelOptions,
    out: str,
    *,
    taxa: str | None = None,
    from_tol: str | None = None,
    label_type: str = "taxon_com",
    templates: str | None = None,
    captions: str | None = None,
    images: str | None = None,
    per_taxon: int = 3,
    log: str | None = None,
    echo: Echo = print,
) -> TaxaIndex:
    """``biocap-predict index``: build (or resume, or reuse) an index, or import a published one."""
    if (taxa is None) == (from_tol is None):
        raise PredictInputError("give exactly one of --taxa or --from-tol")
    record = RunLog(
        log,
        model=options.model,
        pretrained=options.pretrained,
        out=out,
        inputs={
            "taxa": taxa,
            "from_tol": from_tol,
            "captions": captions,
            "templates": templates,
            "images": images,
        },
    )
    predictor = options.load(echo=echo)
    kwargs = {"model_name": options.model, "pretrained": options.pretrained}
    if from_tol:
        index = TaxaIndex.from_tol(predictor.model, from_tol, out, **kwargs)
    else:
        index = TaxaIndex.build(
            predictor.model,
            taxa,
            out,
            label_type=label_type,
            templates=read_templates(templates) if templates else None,
            captions=captions,
            device=str(predictor.device),
            precision=predictor.precision,
            progress=options.progress,
            **kwargs,
        )
    if images:
        predictor.use_index(index)
        refs = predictor.add_references(
            images, per_taxon, on_skip=lambda error: echo(f"skipped: {error}")
        )
        echo(f"reference photos: {len(refs.paths)} linked from {images}")
    record.update(model_fingerprint=index.fingerprint, taxa=len(index))
    record.write()
    return index


@dataclass
class PredictRequest:
    """One ``predict`` run: its label source (index, labels or bins), ranks, filters and output."""

    index: str | None = None
    labels: str | None = None
    bins: str | None = None
    rank: str = "species"
    k: int = 5
    within: Sequence[str] = ()
    subset: str | None = None
    captions: int = 0
    fmt: str = "csv"
    output: str | None = None
    rollup: float | None = None
    prior: str | None = None
    prior_missing: float | None = None
    group_by: str | None = None

    def columns(self, taxa: bool) -> tuple[str, ...]:
        """The output columns: custom labels', or the taxon rows' with what the options add."""
        if not taxa:
            return LABEL_COLUMNS
        first = OBSERVATION_COLUMNS if self.group_by else TAXON_COLUMNS[:1]
        return (
            first
            + TAXON_COLUMNS[1:]
            + (("caption",) if self.captions else ())
            + (ROLLUP_COLUMNS if self.rollup is not None else ())
        )

    def answers(self, inputs: Inputs) -> tuple[Prior | None, dict[str, list[str]] | None]:
        """The prior and the observations the request asks for (checked before the model loads)."""
        taxa_only = [
            flag
            for flag, value in (("--rollup", self.rollup), ("--prior", self.prior))
            if value is not None
        ] + (["--group-by"] if self.group_by else [])
        if taxa_only and (self.labels is not None or self.bins is not None):
            raise PredictInputError(f"{', '.join(taxa_only)} need a taxa index, not labels or bins")
        prior = Prior.read(self.prior, self.prior_missing) if self.prior else None
        if not self.group_by:
            return prior, None
        if not inputs.from_list or inputs.paths or inputs.embeddings:
            raise PredictInputError("--group-by needs --from-list CSV (and no other inputs)")
        return prior, read_observations(inputs.from_list, self.group_by)


def predict(
    options: ModelOptions,
    inputs: Inputs,
    request: PredictRequest,
    *,
    log: str | None = None,
    echo: Echo = print,
) -> RunSummary:
    """``biocap-predict predict``: stream rows for every input image (or stored embedding).

    Without ``--index``, ``--labels`` or ``--bins``, the released models whose tree-of-life text
    embeddings are published predict over those (:mod:`biocap_predict.hub`: downloaded and imported
    once, then reused); any other model needs an index, and the error says how to build one.
    """
    if sum(x is not None for x in (request.index, request.labels, request.bins)) > 1:
        raise PredictInputError("give one of --index, --labels or --bins, not several")
    published = None
    if request.index is None and request.labels is None and request.bins is None:
        published = published_for(options.model)  # a model without published embeddings: say so
    prior, observations = request.answers(inputs)
    files = [] if observations else inputs.files()
    labels = read_label_list(request.labels) if request.labels is not None else None
    bins = read_bins(request.bins) if request.bins is not None else None
    within = {
        **parse_within(list(request.within)),
        **(read_subset(request.subset) if request.subset else {}),
    }
    index = TaxaIndex.load(request.index) if request.index else None
    tol_files = published.fetch(echo) if published else None  # before the model loads
    record = RunLog(
        log,
        model=options.model,
        pretrained=options.pretrained,
        request=request.__dict__,
        inputs=inputs.embeddings or (inputs.from_list if observations else files),
    )
    predictor = options.load(index, echo=echo)
    if tol_files is not None:
        index = tol_files.index(predictor.model, fingerprint=predictor.fingerprint, echo=echo)
        predictor.use_index(index)
    record.update(model_fingerprint=predictor.fingerprint, index=str(index.path) if index else None)
    summary = RunSummary()

    def skip(error: ImageError) -> None:
        summary.skipped.append(str(error))
        echo(f"skipped: {error}")

    writer = RowWriter(request.output, request.fmt, request.columns(index is not None))
    try:
        for rows in _row_batches(
            predictor,
            files,
            inputs.embeddings,
            labels,
            bins,
            within,
            request,
            skip,
            prior,
            observations,
        ):
            writer.write(rows)
            summary.rows += rows.height
            # polars' n_unique: ~1 ms a call
            summary.images += len(set(rows[rows.columns[0]].to_list()))
    finally:
        writer.close()
    record.update(rows=summary.rows, images=summary.images, skipped=summary.skipped)
    record.write()
    return summary


def _row_batches(
    predictor: Predictor,
    files,
    embeddings,
    labels,
    bins,
    within,
    request,
    skip,
    prior=None,
    observations=None,
):
    answers = {"rollup": request.rollup, "prior": prior}
    if embeddings:
        names, feats, fingerprint = read_embeddings(embeddings)
        if fingerprint and fingerprint != predictor.fingerprint:
            raise PredictInputError(
                f"{embeddings}: embeddings of another model (fingerprint {fingerprint}); "
                f"{predictor.model_name} has {predictor.fingerprint}"
            )
        if predictor.index is None:
            return predictor.iter_classify_embeddings(names, feats, labels, bins, request.k)
        return predictor.iter_predict_embeddings(
            names, feats, request.rank, request.k, within, captions=request.captions, **answers
        )
    if predictor.index is None:
        return predictor.iter_classify(files, labels, bins, request.k, on_skip=skip)
    if observations:
        return predictor.iter_predict_observations(
            observations,
            request.rank,
            request.k,
            within,
            captions=request.captions,
            on_skip=skip,
            **answers,
        )
    return predictor.iter_predict(
        files, request.rank, request.k, within, captions=request.captions, on_skip=skip, **answers
    )


def embed(
    options: ModelOptions,
    inputs: Inputs,
    out: str,
    *,
    head: str = "tax",
    normalize: bool = True,
    fmt: str = "parquet",
    log: str | None = None,
    echo: Echo = print,
) -> RunSummary:
    """``biocap-predict embed``: image embeddings that ``predict --embeddings`` reads back."""
    files = inputs.files()
    record = RunLog(
        log, model=options.model, pretrained=options.pretrained, inputs=files, head=head
    )
    predictor = options.load(echo=echo)
    writer = EmbeddingWriter(out, fmt, predictor.fingerprint, normalize)
    summary = RunSummary()

    def skip(error: ImageError) -> None:
        summary.skipped.append(str(error))
        echo(f"skipped: {error}")

    for names, feats in predictor.embed(files, head, normalize, on_skip=skip):
        writer.write(names, feats)
        summary.images += len(names)
    writer.close()
    record.update(
        model_fingerprint=predictor.fingerprint, images=summary.images, skipped=summary.skipped
    )
    record.write()
    return summary


def list_taxa(index: str, rank: str = "species") -> list[str]:
    """Distinct names at a rank of an index (species by binomial)."""
    if rank not in RANKS:
        raise PredictInputError(f"unknown rank {rank!r}; expected one of {', '.join(RANKS)}")
    return TaxaIndex.load(index).rank_values(RANKS.index(rank))


def list_models() -> list[str]:
    """The toolkit's own configs, then every OpenCLIP architecture with its pretrained tags."""
    import open_clip

    from biocap_core.model import toolkit_models

    tags: dict[str, list[str]] = {}
    for arch, tag in open_clip.list_pretrained():
        tags.setdefault(arch, []).append(tag)
    own = [f"{name}\t(biocap toolkit)" for name in toolkit_models()]
    return own + [
        f"{arch}\t{', '.join(tags.get(arch, [])) or '-'}" for arch in open_clip.list_models()
    ]
