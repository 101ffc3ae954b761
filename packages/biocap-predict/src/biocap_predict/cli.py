"""``biocap-predict``: build a taxa index, predict, embed, list taxa and models, serve the demo
page.

Each command parses its flags and calls one function of :mod:`biocap_predict.runs` (or the web
module); errors on bad input are printed as one line naming the input, with exit status 1.
"""

from __future__ import annotations

from pathlib import Path

import typer

from biocap_core.errors import BioCAPError
from biocap_core.precision import PRECISIONS
from biocap_core.taxonomy import TAXON_LABEL_TYPES

app = typer.Typer(
    help="Name the organism in a photo with any BioCAP/BioCLIP-style model.", no_args_is_help=True
)

MODEL = typer.Option(
    "hf-hub:imageomics/biocap",
    "--model",
    help=(
        "OpenCLIP or toolkit architecture (BioCAP-toy), hf-hub:/local-dir: name, JSON config, or a"
        " biocap-train checkpoint (.pt: it carries its config)."
    ),
)
PRETRAINED = typer.Option(
    None,
    "--pretrained",
    help="OpenCLIP tag (e.g. openai) or weights file for --model's architecture.",
)
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
PRECISION = typer.Option(
    None, "--precision", help=f"{', '.join(PRECISIONS)} (default: amp on GPU, else fp32)."
)
BATCH = typer.Option(32, "--batch-size", min=1, help="Images per forward pass.")
WORKERS = typer.Option(2, "--workers", min=0, help="Image-decoding worker processes.")
GPU_DECODE = typer.Option(
    False,
    "--gpu-decode",
    help="Decode, resize and normalise JPEGs on the GPU (CUDA only); workers just read the files.",
)
LOG = typer.Option(
    None, "--log", help="Write a JSON provenance record (versions, command, model, inputs) here."
)
QUIET = typer.Option(False, "--quiet", help="No progress bars.")
RECURSIVE = typer.Option(
    False, "--recursive", "-r", help="Descend into sub-folders of folder inputs."
)
FROM_LIST = typer.Option(
    None,
    "--from-list",
    help="A file naming one image per line (predict --group-by: a CSV with a path column).",
)
NUM_SHARDS = typer.Option(
    None,
    "--num-shards",
    min=1,
    help="Split the inputs over this many jobs (default: a SLURM array's or torchrun's, else 1).",
)
SHARD_INDEX = typer.Option(
    None, "--shard-index", min=0, help="This job's share, 0 .. --num-shards - 1."
)
PART_SIZE = typer.Option(
    10_000,
    "--part-size",
    min=1,
    help="Inputs per part of the output: what a killed run can lose, resumed by rerunning.",
)
PUBLISHED_HELP = (
    "hf-hub:imageomics/bioclip, bioclip-2 and biocap use the tree-of-life embeddings "
    "published on the Hugging Face Hub (downloaded once into its cache, HF_HOME; "
    "HF_HUB_OFFLINE=1 uses the cache alone); other models need an index."
)


def _run(call):
    """Run a command body; bad input ends the command with its message instead of a traceback."""
    try:
        return call()
    except (BioCAPError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _job(num_shards, shard_index, part_size):
    from biocap_predict.parts import Job

    return Job(num_shards, shard_index, part_size)


def _options(model, pretrained, device, precision, batch_size, workers, quiet, gpu_decode=False):
    from biocap_predict.runs import ModelOptions

    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {PRECISIONS}, not {precision!r}")
    return ModelOptions(
        model,
        pretrained,
        device,
        precision,
        batch_size,
        workers,
        progress=not quiet,
        gpu_decode=gpu_decode,
    )


@app.command()
def index(
    out: Path = typer.Option(
        ..., "--out", help="Index folder to write (resumed or reused when it matches)."
    ),
    taxa: Path | None = typer.Option(
        None, "--taxa", help="Catalog parquet, species CSV or any 7-rank table."
    ),
    from_tol: Path | None = typer.Option(
        None,
        "--from-tol",
        help=(
            "Published tree-of-life embeddings to import instead: a "
            "txt_emb_*.npy file (its .json beside it) or a folder holding one such pair."
        ),
    ),
    label_type: str = typer.Option(
        "taxon_com", "--label-type", help=f"Text per taxon: {', '.join(TAXON_LABEL_TYPES)}."
    ),
    templates: Path | None = typer.Option(
        None,
        "--templates",
        help="Templates file (.txt one per line, or .json); default the 81 zero-shot templates.",
    ),
    captions: Path | None = typer.Option(
        None, "--captions", help="Trait captions table to index too."
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help=(
            "Reference photos: one sub-folder per species named 'Genus epithet' (or"
            " Genus_epithet); linked with their embeddings so the demo page can show them."
        ),
    ),
    per_taxon: int = typer.Option(
        3, "--images-per-taxon", min=1, help="Reference photos kept per species."
    ),
    model: str = MODEL,
    pretrained: str | None = PRETRAINED,
    device: str = DEVICE,
    precision: str | None = PRECISION,
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    log: Path | None = LOG,
    quiet: bool = QUIET,
) -> None:
    """Build a taxa index: one text embedding per taxon (and trait caption) for one model."""
    from biocap_predict.runs import build_index

    options = _options(model, pretrained, device, precision, batch_size, 0, quiet)
    built = _run(
        lambda: build_index(
            options,
            str(out),
            taxa=taxa and str(taxa),
            from_tol=from_tol and str(from_tol),
            label_type=label_type,
            templates=templates and str(templates),
            captions=captions and str(captions),
            images=images and str(images),
            per_taxon=per_taxon,
            log=log and str(log),
            echo=lambda m: typer.echo(m, err=True),
        )
    )
    typer.echo(f"{built!r}", err=True)


@app.command()
def predict(
    paths: list[str] = typer.Argument(None, help="Image files and folders."),
    index: Path | None = typer.Option(
        None,
        "--index",
        help=(
            "Taxa index: open-ended tree-of-life prediction. Without it (and "
            "without --labels/--bins), "
        )
        + PUBLISHED_HELP,
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Custom labels: 'a,b,c' or a file, one per line."
    ),
    bins: Path | None = typer.Option(
        None, "--bins", help="CSV of label,bin: probabilities summed per bin."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Stored image embeddings instead of images."
    ),
    recursive: bool = RECURSIVE,
    from_list: Path | None = FROM_LIST,
    rank: str = typer.Option(
        "species", "--rank", help="kingdom ... species, or all (every rank in one pass)."
    ),
    k: int = typer.Option(5, "--k", min=1, help="Hits per image and rank."),
    within: list[str] | None = typer.Option(
        None, "--within", help="Restrict the index, e.g. order=Lepidoptera."
    ),
    subset: Path | None = typer.Option(
        None,
        "--subset",
        help="CSV whose first column, named after a rank, lists the names to keep.",
    ),
    captions: int = typer.Option(
        0, "--captions", min=0, help="Also give this many nearest trait captions."
    ),
    fmt: str = typer.Option("csv", "--format", help="csv, table, jsonl or parquet."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file (default: stdout); written in parts a rerun resumes (OUTPUT.parts/).",
    ),
    num_shards: int | None = NUM_SHARDS,
    shard_index: int | None = SHARD_INDEX,
    part_size: int = PART_SIZE,
    rollup: float | None = typer.Option(
        None,
        "--rollup",
        min=0.0,
        max=1.0,
        help=(
            "Add rollup_rank, rollup, rollup_score: per photo, the deepest rank whose best taxon"
            " has at least this probability (species if sure, else genus, family ...)."
        ),
    ),
    prior: Path | None = typer.Option(
        None,
        "--prior",
        help=(
            "CSV rank,name,weight (e.g. a region's GBIF occurrence counts): multiplies each"
            " species' probability by the weight of its deepest taxon listed, then renormalises."
        ),
    ),
    prior_missing: float | None = typer.Option(
        None,
        "--prior-missing",
        help="Weight of species the prior does not name (default: its smallest weight).",
    ),
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        help=(
            "Column of the --from-list CSV naming the observation (several photos of one"
            " organism): one prediction per observation, from its photos' mean log-probabilities."
        ),
    ),
    model: str = MODEL,
    pretrained: str | None = PRETRAINED,
    device: str = DEVICE,
    precision: str | None = PRECISION,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    gpu_decode: bool = GPU_DECODE,
    log: Path | None = LOG,
    quiet: bool = QUIET,
) -> None:
    """Predict taxa (or custom labels, or bins) for images or stored embeddings."""
    from biocap_predict.runs import Inputs, PredictRequest
    from biocap_predict.runs import predict as run_predict

    options = _options(model, pretrained, device, precision, batch_size, workers, quiet, gpu_decode)
    inputs = Inputs(
        paths or (), recursive, from_list and str(from_list), embeddings and str(embeddings)
    )
    request = PredictRequest(
        index and str(index),
        labels,
        bins and str(bins),
        rank,
        k,
        within or (),
        subset and str(subset),
        captions,
        fmt,
        output and str(output),
        rollup,
        prior and str(prior),
        prior_missing,
        group_by,
    )
    job = _job(num_shards, shard_index, part_size)
    summary = _run(
        lambda: run_predict(
            options,
            inputs,
            request,
            job=job,
            log=log and str(log),
            echo=lambda m: typer.echo(m, err=True),
        )
    )
    if summary.skipped:
        typer.echo(f"{len(summary.skipped)} input(s) skipped, {summary.images} predicted", err=True)


@app.command()
def embed(
    paths: list[str] = typer.Argument(None, help="Image files and folders."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Embeddings file (.parquet, .npz or .jsonl)."
    ),
    head: str = typer.Option("tax", "--head", help="tax, caption or both."),
    normalize: bool = typer.Option(
        True, "--normalize/--raw", help="Unit-length embeddings, or the raw projections."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="parquet, npz or jsonl (default: from the suffix)."
    ),
    recursive: bool = RECURSIVE,
    from_list: Path | None = FROM_LIST,
    num_shards: int | None = NUM_SHARDS,
    shard_index: int | None = SHARD_INDEX,
    part_size: int = PART_SIZE,
    model: str = MODEL,
    pretrained: str | None = PRETRAINED,
    device: str = DEVICE,
    precision: str | None = PRECISION,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    gpu_decode: bool = GPU_DECODE,
    log: Path | None = LOG,
    quiet: bool = QUIET,
) -> None:
    """Write image embeddings (one or both heads) that `predict --embeddings` reads back."""
    from biocap_predict.runs import Inputs
    from biocap_predict.runs import embed as run_embed

    options = _options(model, pretrained, device, precision, batch_size, workers, quiet, gpu_decode)
    inputs = Inputs(paths or (), recursive, from_list and str(from_list))
    fmt = fmt or output.suffix.lstrip(".") or "parquet"
    summary = _run(
        lambda: run_embed(
            options,
            inputs,
            str(output),
            head=head,
            normalize=normalize,
            fmt=fmt,
            job=_job(num_shards, shard_index, part_size),
            log=log and str(log),
            echo=lambda m: typer.echo(m, err=True),
        )
    )
    typer.echo(f"{summary.images} image(s) embedded -> {output}", err=True)


@app.command()
def merge(
    output: Path = typer.Argument(
        ..., help="The --output every job of a predict or embed run was given."
    ),
) -> None:
    """Join the parts of every job (--num-shards, a SLURM array, torchrun) into OUTPUT, after
    checking that every job finished and every input is there exactly once."""
    from biocap_predict.parts import merge as merge_parts

    counts = _run(lambda: merge_parts(output))
    typer.echo(
        f"{counts['images']} image(s) of {counts['inputs']} input(s) -> {output}"
        f" ({counts['skipped']} skipped)",
        err=True,
    )


@app.command("list-taxa")
def list_taxa(
    index: Path = typer.Option(..., "--index", help="Taxa index folder."),
    rank: str = typer.Option("species", "--rank", help="kingdom ... species."),
) -> None:
    """Print the distinct names at one rank of an index (species as binomials)."""
    from biocap_predict.runs import list_taxa as names

    for name in _run(lambda: names(str(index), rank)):
        typer.echo(name)


@app.command("list-models")
def list_models() -> None:
    """Print the toolkit's model configs and OpenCLIP's architectures with their pretrained tags."""
    from biocap_predict.runs import list_models as models

    for line in models():
        typer.echo(line)


@app.command()
def serve(
    index: Path | None = typer.Option(
        None, "--index", help="Taxa index folder. Without it, " + PUBLISHED_HELP
    ),
    model: str = MODEL,
    pretrained: str | None = PRETRAINED,
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (0.0.0.0: every interface; the page has no login).",
    ),
    port: int = typer.Option(
        8000, "--port", min=0, help="Port; 0 picks a free one. The URL is printed."
    ),
    max_upload_mb: float = typer.Option(
        10.0, "--max-upload-mb", min=0.01, help="Largest upload accepted."
    ),
    max_upload_pixels: int = typer.Option(
        40_000_000,
        "--max-upload-pixels",
        min=1,
        help="Most pixels a photo may have (read from its header; more gets 413 before decoding).",
    ),
    max_decodes: int = typer.Option(
        2, "--max-decodes", min=1, help="Uploads decoded at the same time (bounds memory)."
    ),
    rollup: float = typer.Option(
        0.8,
        "--rollup",
        min=0.01,
        max=1.0,
        help="The page's rollup line names the deepest rank at least this probable.",
    ),
    device: str = DEVICE,
    precision: str | None = PRECISION,
) -> None:
    """Serve the demo page and its JSON API (needs the [web] extra: pip install
    'biocap-predict[web]')."""
    try:
        from biocap_predict.web import serve as run_serve
    except (
        ImportError
    ) as exc:  # the web module's message names the missing package and the install command
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _run(
        lambda: run_serve(
            index,
            model,
            pretrained,
            host=host,
            port=port,
            device=device,
            precision=precision,
            max_upload_mb=max_upload_mb,
            max_upload_pixels=max_upload_pixels,
            max_decodes=max_decodes,
            rollup=rollup,
        )
    )
