"""``biocap-core``: make the toy tree of life, validate tables, export checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer

from biocap_core import schemas
from biocap_core.errors import BioCAPError, UnwritableFolder
from biocap_core.fileio import writable_folder

app = typer.Typer(
    help="BioCAP core tools: toy data, table validation, checkpoint export, the cache folder.",
    no_args_is_help=True)


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
        _fail(f"--out {out}: " + ("the folder is not writable" if out.is_dir() else
                                  f"cannot create the folder ({exc.reason})"))


@app.command()
def toy(
    out: Path = typer.Option(..., "--out", help="Folder to write the toy tree of life into."),
    species: int = typer.Option(64, help="Number of species."),
    images_per_species: int = typer.Option(32, help="Training images per species."),
    val_per_species: int = typer.Option(4, help="Validation images per species."),
    eval_per_species: int = typer.Option(4, help="Zero-shot evaluation images per species."),
    image_size: int = typer.Option(64, help="Side of the square images, in pixels."),
    shard_size: int = typer.Option(256, help="Samples per webdataset shard."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    caption_noise: float = typer.Option(
        0.0, min=0.0, max=1.0,
        help="Share of trait phrases in the training captions made wrong or missing, as MLLM "
             "captions sometimes are (0 to 1)."),
) -> None:
    """Generate the toy tree of life (shards, catalog and every benchmark layout)."""
    from biocap_core.toy import ToyConfig, generate

    _make_out_dir(out)
    manifest = generate(out, ToyConfig(species=species, images_per_species=images_per_species,
                                       val_per_species=val_per_species, eval_per_species=eval_per_species,
                                       image_size=image_size, shard_size=shard_size, seed=seed,
                                       caption_noise=caption_noise))
    typer.echo(json.dumps(manifest, indent=2))
    typer.echo(f"toy tree of life written to {out}")


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
    model: str = typer.Argument(..., help="Architecture name, hf-hub:/local-dir: name or JSON config."),
    out: Path = typer.Option(..., "--out", help="Folder for the OpenCLIP model (config + safetensors)."),
    pretrained: Optional[str] = typer.Option(None, help="Checkpoint file or OpenCLIP tag to load first."),
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
    typer.echo(f"exported the {head} head to {out} (load with open_clip.create_model('local-dir:{out}'))")


@app.command("cache-dir")
def cache_dir() -> None:
    """Print the cache folder: $BIOCAP_CACHE, else $XDG_CACHE_HOME/biocap, else ~/.cache/biocap."""
    from biocap_core.cache import cache_dir as folder

    typer.echo(folder().resolve())
