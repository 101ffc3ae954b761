"""What each command does, as functions: the CLI parses flags and calls exactly one of these.

Each run streams its inputs (a list of millions of paths is never held) and its outputs a block at a
time, reports skipped images through ``echo`` and, with ``log``, writes a provenance record
(versions, command, model fingerprint, inputs, start and end; status ``failed`` and the error when
it stops on one). With an output file, ``predict`` and ``embed`` write in parts that a rerun resumes
and that several jobs share out (:mod:`biocap_predict.parts`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from biocap_core.jobs import iter_select
from biocap_core.taxonomy import RANKS, read_templates
from biocap_predict.errors import ImageError, PredictInputError
from biocap_predict.filters import parse_within, read_subset
from biocap_predict.hub import announce_weights, published_for
from biocap_predict.images import iter_paths, read_observations
from biocap_predict.index import TaxaIndex
from biocap_predict.outputs import EMBEDDING_FORMATS, EmbeddingWriter, RowWriter, read_embeddings
from biocap_predict.parts import Job, PartStore, Step, chunks, merge, run_parts, share_size, start
from biocap_predict.predictor import Predictor, Progress, bins_of
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
            device=job_device(self.device),
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

    def check(self) -> None:
        if self.embeddings and (self.paths or self.from_list):
            raise PredictInputError("give images or --embeddings, not both")

    def names(self) -> Iterator[str]:
        """The image files, streamed (:func:`~biocap_predict.images.iter_paths`)."""
        return iter_paths(self.paths, self.recursive, self.from_list)

    def described(self) -> dict:
        """What the inputs are, for the log and a resumed run's check (absolute paths)."""
        absolute = [os.path.abspath(p) for p in self.paths]
        return {
            "paths": absolute,
            "recursive": self.recursive,
            "from_list": self.from_list and os.path.abspath(self.from_list),
            "embeddings": self.embeddings and os.path.abspath(self.embeddings),
        }


def job_device(device: str, env=os.environ) -> str:
    """``torchrun --nproc-per-node N`` starts one process per GPU: ``LOCAL_RANK`` picks this one's
    (for ``auto`` and ``cuda``); a SLURM array job sees its own GPU as ``cuda``."""
    local = env.get("LOCAL_RANK")
    if local is not None and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local}"
    return device


@dataclass
class RunSummary:
    rows: int = 0
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0  #: inputs done by an earlier, killed run of the same command
    merged: dict | None = None  #: the joined output's counts (:func:`~biocap_predict.parts.merge`)
    #: this run's inputs and the times of its parts (:func:`~biocap_predict.parts.run_parts`)
    processed: dict | None = None

    def logged(self) -> dict:
        """What the ``--log`` record says of the run's inputs."""
        return {
            "images": self.images,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "processed": self.processed,
        }


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
    job: Job = Job(),
    log: str | None = None,
    echo: Echo = print,
) -> RunSummary:
    """``biocap-predict predict``: stream rows for every input image (or stored embedding).

    Without ``--index``, ``--labels`` or ``--bins``, the released models whose tree-of-life text
    embeddings are published predict over those (:mod:`biocap_predict.hub`: downloaded and imported
    once, then reused); any other model needs an index, and the error says how to build one. With
    an output file (CSV, JSONL or parquet) the run is written in parts, resumable and shared out
    over ``job``'s jobs (:mod:`biocap_predict.parts`).
    """
    record = RunLog(
        log,
        model=options.model,
        pretrained=options.pretrained,
        request=request.__dict__,
        inputs=inputs.described(),
    )
    with record.failing():
        summary = _predict(options, inputs, request, job, record, echo)
    record.write()
    return summary


def _predict(options, inputs, request, job, record, echo) -> RunSummary:
    if sum(x is not None for x in (request.index, request.labels, request.bins)) > 1:
        raise PredictInputError("give one of --index, --labels or --bins, not several")
    inputs.check()
    published = None
    if request.index is None and request.labels is None and request.bins is None:
        published = published_for(options.model)  # a model without published embeddings: say so
    prior, observations = request.answers(inputs)
    labels = read_label_list(request.labels) if request.labels is not None else None
    bins = read_bins(request.bins) if request.bins is not None else None
    within = {
        **parse_within(list(request.within)),
        **(read_subset(request.subset) if request.subset else {}),
    }
    index = TaxaIndex.load(request.index) if request.index else None
    columns = request.columns(index is not None or published is not None)
    split = job.resolved()
    store, counts = None, None
    if not inputs.embeddings and not observations and request.output and request.fmt != "table":
        settings = _settings("predict", options, inputs, split, request.fmt)
        settings.update(request={**request.__dict__, "output": None}, columns=list(columns))
        store = PartStore(request.output, *split)
        counts = start(store, inputs.names, settings)  # before the model: a refusal costs nothing
    tol_files = published.fetch(echo) if published else None  # before the model loads
    predictor = options.load(index, echo=echo)
    if tol_files is not None:
        index = tol_files.index(predictor.model, fingerprint=predictor.fingerprint, echo=echo)
        predictor.use_index(index)
    record.update(model_fingerprint=predictor.fingerprint, index=str(index.path) if index else None)
    summary = RunSummary()

    def skip(error: ImageError) -> None:
        summary.skipped.append(str(error))
        echo(f"skipped: {error}")

    def write(writer: RowWriter, names: list[str] | None, step: Step | None = None) -> None:
        batches = _row_batches(
            predictor,
            names,
            inputs.embeddings,
            labels,
            bins,
            within,
            request,
            skip,
            step,
            prior=prior,
            observations=observations,
        )
        for rows in batches:
            writer.write(rows)
            summary.rows += rows.height
            # the file (or observation) column; polars' n_unique: ~1 ms a call
            summary.images += len(set(rows[rows.columns[0]].to_list()))

    if inputs.embeddings or observations:  # stored embeddings, observations: one pass, no parts
        with _closing(RowWriter(request.output, request.fmt, columns)) as writer:
            write(writer, None)
    elif store is None:
        predictor.progress = False  # the run's own bar counts across parts
        with _closing(RowWriter(request.output, request.fmt, columns)) as writer:
            for names, step in _unresumable(inputs, split, job.part_images, options.progress):
                write(writer, names, step)
    else:

        def write_part(names: list[str], part: Path, step: Step) -> list[str]:
            before = len(summary.skipped)
            writer = RowWriter(part, "parquet", columns)
            write(writer, names, step)
            writer.close()  # not on an error: what a failed part wrote goes at the next start
            return summary.skipped[before:]

        predictor.progress = False
        _in_parts(summary, store, inputs, counts, job, write_part, options.progress, echo)
    record.update(rows=summary.rows, job=list(split), **summary.logged())
    return summary


def _settings(command: str, options: ModelOptions, inputs: Inputs, split, fmt: str) -> dict:
    """What a resumed run must share with the run it resumes (and every job with the others)."""
    return {
        "command": command,
        "inputs": inputs.described(),
        "model": options.model,
        "pretrained": options.pretrained,
        "precision": options.precision,
        "num_jobs": split[0],
        "job_index": split[1],
        "format": fmt,
    }


@contextmanager
def _closing(writer: RowWriter) -> Iterator[RowWriter]:
    """A writer closed on the way out, error or not (what was written stays readable)."""
    try:
        yield writer
    finally:
        writer.close()


def _stepper(step: Step | None) -> Progress:
    """The predictor's ``callback(done, total)`` as steps of the run's bar."""
    if step is None:
        return None
    last = 0

    def moved(done: int, _total: int) -> None:
        nonlocal last
        step(done - last)
        last = done

    return moved


def _unresumable(inputs: Inputs, split, part_images: int, progress: bool):
    """This job's inputs a part at a time, each with the step of one bar over all of them, for
    runs with nothing to resume (stdout, ``--format table``)."""
    total = share_size(sum(1 for _ in inputs.names()), *split)
    with tqdm(total=total, unit="img", desc="images", disable=not progress) as bar:
        for names in chunks(iter_select(inputs.names(), *split), part_images):
            yield names, bar.update


def _in_parts(summary, store, inputs, counts, job, write_part, progress, echo) -> None:
    """Run (or resume) this job's parts; a single job then joins them into the output."""
    num_jobs, job_index = store.split
    if counts["resumed"]:
        echo(f"resuming: {counts['resumed']} of this job's {counts['inputs']} inputs are done")
    summary.resumed = counts["resumed"]
    names = iter_select(inputs.names(), num_jobs, job_index)
    summary.processed = run_parts(
        store, names, counts, job.part_images, write_part, progress=progress
    )
    if num_jobs == 1:
        summary.merged = merge(store.output)
    else:
        echo(
            f"job {job_index} of {num_jobs} finished; once every job has, join their parts: "
            f"biocap-predict merge {store.output}"
        )


def _row_batches(
    predictor: Predictor,
    files,
    embeddings,
    labels,
    bins,
    within,
    request,
    skip,
    step=None,
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
    callback = _stepper(step)
    if predictor.index is None:
        return predictor.iter_classify(
            files, labels, bins, request.k, on_skip=skip, callback=callback
        )
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
        files,
        request.rank,
        request.k,
        within,
        captions=request.captions,
        on_skip=skip,
        callback=callback,
        **answers,
    )


def embed(
    options: ModelOptions,
    inputs: Inputs,
    out: str,
    *,
    head: str = "tax",
    normalize: bool = True,
    fmt: str = "parquet",
    job: Job = Job(),
    log: str | None = None,
    echo: Echo = print,
) -> RunSummary:
    """``biocap-predict embed``: image embeddings that ``predict --embeddings`` reads back,
    written in parts, resumable and shared out over ``job``'s jobs as ``predict``'s rows are."""
    record = RunLog(
        log,
        model=options.model,
        pretrained=options.pretrained,
        inputs=inputs.described(),
        head=head,
    )
    with record.failing():
        if fmt not in EMBEDDING_FORMATS:
            raise PredictInputError(
                f"unknown embedding format {fmt!r}; expected one of {EMBEDDING_FORMATS}"
            )
        split = job.resolved()
        settings = _settings("embed", options, inputs, split, fmt)
        settings.update(head=head, normalize=normalize)
        store = PartStore(out, *split)
        counts = start(store, inputs.names, settings)
        predictor = options.load(echo=echo)
        predictor.progress = False  # the run's own bar counts across parts
        summary = RunSummary()

        def write_part(names: list[str], part: Path, step: Step) -> list[str]:
            skipped: list[str] = []
            writer = EmbeddingWriter(part, "parquet", predictor.fingerprint, normalize)
            embedded = predictor.embed(
                names, head, normalize, on_skip=lambda e: skipped.append(str(e)),
                callback=_stepper(step),
            )  # fmt: skip
            for batch_names, feats in embedded:
                writer.write(batch_names, feats)
            if writer.count:  # a part whose every image was skipped has no file
                writer.close()
            for error in skipped:
                echo(f"skipped: {error}")
            summary.images += writer.count
            summary.skipped += skipped
            return skipped

        _in_parts(summary, store, inputs, counts, job, write_part, options.progress, echo)
        record.update(model_fingerprint=predictor.fingerprint, job=list(split), **summary.logged())
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
