"""``biocap-core``: make the toy tree of life, validate tables, export checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from biocap_core import schemas
from biocap_core.errors import BioCAPError, UnwritableFolder
from biocap_core.fileio import writable_folder

app = typer.Typer(
    help=(
        "BioCAP core tools: toy data, training shards, table validation, checkpoint export, "
        "the cache folder."
    ),
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _make_out_dir(out: Path) -> None:
    """Create ``--out`` before any work, so that a path that cannot be a writable folder (under a
    file, or where nothing may be written) fails at once in one line naming it, instead of in a
    traceback after a model load or thousands of images."""
    try:
        writable_folder(out)
    except UnwritableFolder as exc:
        _fail(
            f"--out {out}: "
            + (
                "the folder is not writable"
                if out.is_dir()
                else f"cannot create the folder ({exc.reason})"
            )
        )


@app.command()
def toy(
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write the toy tree of life into."
    ),
    as_download: Path | None = typer.Option(
        None,
        "--as-download",
        help=(
            "Instead, write the toy species in the TreeOfLife-10M download's layout"
            " (metadata/catalog.csv, dataset/eol|inat21|bioscan, captions/), broken files included,"
            " for `biocap-core shards`."
        ),
    ),
    species: int = typer.Option(64, help="Number of species."),
    images_per_species: int = typer.Option(32, help="Training images per species."),
    val_per_species: int = typer.Option(4, help="Validation images per species."),
    eval_per_species: int = typer.Option(4, help="Zero-shot evaluation images per species."),
    image_size: int = typer.Option(64, help="Side of the square images, in pixels."),
    shard_size: int = typer.Option(256, help="Samples per webdataset shard."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    caption_noise: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help=(
            "Share of trait phrases in the training captions made wrong or missing, as MLLM "
            "captions sometimes are (0 to 1)."
        ),
    ),
) -> None:
    """Generate the toy tree of life (shards, catalog and every benchmark layout)."""
    from biocap_core.toy import ToyConfig, generate, write_download

    if (out is None) == (as_download is None):
        _fail(
            "give --out DIR (the toy tree of life) or --as-download DIR "
            "(as the TreeOfLife-10M download)"
        )
    config = ToyConfig(
        species=species,
        images_per_species=images_per_species,
        val_per_species=val_per_species,
        eval_per_species=eval_per_species,
        image_size=image_size,
        shard_size=shard_size,
        seed=seed,
        caption_noise=caption_noise,
    )
    _make_out_dir(out or as_download)
    if as_download is not None:
        made = write_download(as_download, config)
        typer.echo(
            f"toy download written to {as_download}: {made['rows']} catalog rows "
            f"(+{made['train_small_rows']} train_small), {len(made['defects'])} with defects"
        )
        return
    manifest = generate(out, config)
    typer.echo(json.dumps(manifest, indent=2))
    typer.echo(f"toy tree of life written to {out}")


@app.command()
def shards(
    catalog: Path = typer.Option(
        ...,
        "--catalog",
        help=(
            "metadata/catalog.csv of the TreeOfLife-10M download, or "
            "your own CSV/parquet with image_path, the 7 ranks and common."
        ),
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Output folder: <split>/shard-NNNNNN.tar + sizes.json, errors.parquet, manifest.json.",
    ),
    eol: Path | None = typer.Option(None, help="Folder of the download's image_set_*.tar.gz."),
    inat21: Path | None = typer.Option(None, help="iNat21's train/ folder (class folders)."),
    bioscan: Path | None = typer.Option(None, help="BIOSCAN-1M's folder of part1 ... part113."),
    image_root: Path | None = typer.Option(
        None, help="Where relative image_path values start (default: the catalog's folder)."
    ),
    key_column: str | None = typer.Option(
        None, help="Id column of your own catalog (default: uuid)."
    ),
    split: list[str] = typer.Option(
        [],
        "--split",
        help=(
            "Split to build (repeatable); default: every split "
            "in the catalog but train_small (a subset of train: ask for it by name)."
        ),
    ),
    captions: Path | None = typer.Option(
        None,
        help=(
            "uuid, caption table (e.g. TreeOfLife-10M-Captions' "
            "uuid_caption_description.parquet): adds caption.txt."
        ),
    ),
    exclude: list[Path] = typer.Option(
        [],
        help=(
            "File of ids, 'Genus species' names or EOL file names to "
            "leave out (text, one a line, or JSON such as the Rare Species "
            "lists); repeatable."
        ),
    ),
    image_size: int = typer.Option(224, help="Side of the stored images."),
    keep_aspect: bool = typer.Option(
        False,
        help=(
            "Resize the short side and centre-crop, instead of "
            "squashing to a square as the original."
        ),
    ),
    keep_original: bool = typer.Option(
        False, help="Store the JPEG bytes untouched (others re-encoded at their size)."
    ),
    draft: bool = typer.Option(
        True, help="Decode JPEGs at a reduced scale (>= 2x the size) first."
    ),
    max_pixels: int = typer.Option(
        30_000 * 30_000,
        help=(
            "PIL's MAX_IMAGE_PIXELS: images over twice this "
            "are refused as decompression bombs (the original's value)."
        ),
    ),
    shard_size: int = typer.Option(
        10_000, help="Samples per shard (the last one of a split has fewer)."
    ),
    seed: int = typer.Option(0, help="Seed of the order of samples in the shards."),
    workers: int = typer.Option(1, help="Processes on this machine."),
    num_shards: int | None = typer.Option(
        None,
        help=(
            "Split the work across this many jobs (default: "
            "SLURM_ARRAY_TASK_COUNT, else 1); all must run at once."
        ),
    ),
    shard_index: int | None = typer.Option(
        None, help="This job's index (default: SLURM_ARRAY_TASK_ID)."
    ),
    strict: bool = typer.Option(False, help="Exit 1 if any catalog row could not be written."),
    keep_staging: bool = typer.Option(
        False, help="Keep the converted EOL images (.build/staging) after the build."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Build webdataset training shards from the TreeOfLife-10M download or your own photos."""
    from biocap_core.jobs import resolve_job
    from biocap_core.shard_builder import BuildOptions, ImagePolicy, Inputs, build

    if keep_aspect and keep_original:
        raise typer.BadParameter("--keep-aspect and --keep-original exclude each other")
    _make_out_dir(out)
    try:
        num_jobs, job_index = resolve_job(num_shards, shard_index)
        policy = ImagePolicy(
            size=image_size,
            resize="keep" if keep_original else "crop" if keep_aspect else "squash",
            draft=draft,
            max_pixels=max_pixels,
        )
        inputs = Inputs(
            catalog=catalog,
            eol=eol,
            inat21=inat21,
            bioscan=bioscan,
            image_root=image_root,
            key_column=key_column,
            captions=captions,
            exclude=tuple(exclude),
        )
        options = BuildOptions(
            splits=tuple(split) or None,
            policy=policy,
            shard_size=shard_size,
            seed=seed,
            workers=workers,
            num_jobs=num_jobs,
            job_index=job_index,
            progress=progress,
            keep_staging=keep_staging,
        )
        result = build(inputs, out, options)
    except (BioCAPError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if not result.complete:
        typer.echo(
            f"wrote {result.written_now} shard(s); the other jobs write the rest, and the last "
            "to finish "
            "writes sizes.json and the manifest"
        )
        return
    manifest = result.manifest
    for name, counts in manifest["splits"].items():
        typer.echo(
            f"{name}: {counts['written']} samples in {counts['shards']} shard(s); "
            f"{counts['errors']} failed"
            + "".join(f", {n} {reason}" for reason, n in counts["errors_by_reason"].items())
            + f"; {counts['excluded']} excluded"
            + "".join(
                f"; {n} {s} rows skipped (no --{s} folder)"
                for s, n in counts.get("source_not_given", {}).items()
            )
        )
    typer.echo(f"{out}: errors.parquet lists every failed row, manifest.json the inputs and counts")
    if manifest["errors"] and strict:
        _fail(
            f"{manifest['errors']} catalog row(s) could not be written (--strict); "
            f"see {out / 'errors.parquet'}"
        )
    if not any(c["written"] for c in manifest["splits"].values()):
        _fail("no sample was written; see errors.parquet")


@app.command("check-shards")
def check_shards(
    folder: Path = typer.Argument(
        ..., help="A build's --out folder, or one split's folder of shards."
    ),
    workers: int = typer.Option(1, help="Processes reading shards."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Read back every shard: counts against sizes.json and the manifest, duplicate keys, members,
    decodable JPEGs of the stated size, consistent texts. Exit 1 on any problem."""
    from biocap_core.shard_builder import check

    report = check(folder, workers=workers, progress=progress)
    for split, n in report.samples.items():
        typer.echo(f"{split}: {n} samples read")
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    if not report.ok:
        _fail(f"{len(report.problems)} problem(s) in {folder}")
    typer.echo(f"{folder}: every shard checks out")


@app.command()
def validate(
    table: Path = typer.Argument(..., help="CSV, parquet or JSONL file."),
    schema: str = typer.Option(..., "--schema", help=f"One of: {', '.join(schemas.ALL)}."),
    require: list[str] = typer.Option([], help="Extra columns that must be present."),
) -> None:
    """Check that a table fits one of the toolkit's schemas."""
    if schema not in schemas.ALL:
        raise typer.BadParameter(f"unknown schema {schema!r}; choose from {list(schemas.ALL)}")
    try:
        df = schemas.ALL[schema].read(table, require=require)
    except BioCAPError as exc:
        _fail(str(exc))
    typer.echo(f"{table}: {df.height} rows fit the {schema} schema")


@app.command()
def export(
    model: str = typer.Argument(
        ..., help="Architecture name, hf-hub:/local-dir: name or JSON config."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the OpenCLIP model (config + safetensors)."
    ),
    pretrained: str | None = typer.Option(
        None, help="Checkpoint file or OpenCLIP tag to load first."
    ),
    head: str = typer.Option("tax", help="Which projector becomes visual.proj: tax or caption."),
) -> None:
    """Export a BioCAP checkpoint as a plain single-projector OpenCLIP model folder."""
    from biocap_core.checkpoints import export_open_clip, load_model

    _make_out_dir(out)
    try:
        net = load_model(model, pretrained)
        export_open_clip(net, out, head=head)
    except (BioCAPError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(
        f"exported the {head} head to {out} (load with open_clip.create_model('local-dir:{out}'))"
    )


@app.command("cache-dir")
def cache_dir() -> None:
    """Print the cache folder: $BIOCAP_CACHE, else $XDG_CACHE_HOME/biocap, else ~/.cache/biocap."""
    from biocap_core.cache import cache_dir as folder

    typer.echo(folder().resolve())
