"""``biocap-eval``: list the registry's benchmarks, run them on a model, report the results."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from biocap_core.errors import BioCAPError
from biocap_core.precision import PRECISIONS
from biocap_core.taxonomy import LABEL_TYPES

app = typer.Typer(
    help=(
        "Biology benchmarks for CLIP-style models: zero-shot classification, INQUIRE-Rerank, "
        "text-image retrieval."
    ),
    no_args_is_help=True,
)

DATA_ROOT = typer.Option(
    Path("."),
    "--data-root",
    envvar="BIOCAP_EVAL_DATA",
    help="Folder the registry's paths are relative to (env BIOCAP_EVAL_DATA).",
)
REGISTRY = typer.Option(None, "--registry", help="A registry TOML file instead of the shipped one.")


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command("list")
def list_benchmarks(data_root: Path = DATA_ROOT, registry: Path | None = REGISTRY) -> None:
    """Show every benchmark of the registry and whether its annotations and images are on disk."""
    from biocap_eval.registry import load_registry
    from biocap_eval.runner import status

    try:
        benchmarks = load_registry(registry)
    except BioCAPError as exc:
        raise _fail(exc) from exc
    typer.echo(f"data root: {data_root.resolve()}")
    typer.echo(f"{'benchmark':<16} {'task':<10} {'status':<10} {'images':>15}  details")
    for bench in benchmarks.values():
        st = status(bench, data_root)
        images = f"{st.images_found}/{st.images_expected}" if st.images_expected else "-"
        typer.echo(f"{bench.name:<16} {bench.task:<10} {st.state:<10} {images:>15}  {st.detail}")
        for note in st.notes:
            typer.echo(f"{'':<39}{'':>15}  {note}")


@app.command()
def run(
    model: str = typer.Option(
        ...,
        "--model",
        help=(
            "OpenCLIP or toolkit architecture (BioCAP-toy), hf-hub:/local-dir: "
            "name, JSON config, or a biocap-train checkpoint (.pt: it carries its config)."
        ),
    ),
    pretrained: str | None = typer.Option(
        None, help="OpenCLIP tag (e.g. openai) or weights file for --model's architecture."
    ),
    benchmarks: list[str] = typer.Option(
        ["all"],
        "--benchmarks",
        "-b",
        help=(
            "'all', names, tasks (zeroshot, inquire, retrieval) or tags "
            "(paper, toy); repeat or separate with commas."
        ),
    ),
    data_root: Path = DATA_ROOT,
    out: Path = typer.Option(
        Path("eval-results"), "--out", help="Results folder: OUT/<model>/<benchmark>.json."
    ),
    name: str | None = typer.Option(
        None, help="Model label in results and reports (default: from --model)."
    ),
    head: str = typer.Option("tax", help="Visual projector: tax (as the original) or caption."),
    label_type: str | None = typer.Option(
        None, help=f"Override zero-shot label texts: {', '.join(LABEL_TYPES)}."
    ),
    templates: Path | None = typer.Option(
        None, help="Zero-shot templates file (.txt, one per line, or .json)."
    ),
    per_class: bool = typer.Option(
        False, "--per-class", help="Store per-class zero-shot recall in the results."
    ),
    inquire_k: int | None = typer.Option(
        None, help="Rank cut-off for INQUIRE metrics (default: all candidates)."
    ),
    retrieval_prefix: str = typer.Option(
        "a photo of", help="Text put before each retrieval caption."
    ),
    prefix_bug: bool = typer.Option(
        False, "--prefix-bug", help="Join prefix and caption with no space, as the original did."
    ),
    skip_missing: bool = typer.Option(
        False, "--skip-missing", help="Evaluate without missing images (counted)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help=(
            "Fail a benchmark on an undecodable image instead of "
            "skipping it (skipped ones are counted and named)."
        ),
    ),
    force: bool = typer.Option(
        False, "--force", help="Re-run benchmarks that have finished results."
    ),
    batch_size: int = typer.Option(64, min=1),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1), min=0, help="Image decoding worker processes."
    ),
    gpu_decode: bool = typer.Option(
        False,
        "--gpu-decode",
        help=(
            "Decode, resize and normalise JPEGs on the GPU "
            "(CUDA only); workers just read the files."
        ),
    ),
    device: str | None = typer.Option(
        None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."
    ),
    precision: str | None = typer.Option(
        None, help=f"{', '.join(PRECISIONS)} (default: amp on GPU, else fp32)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Image embedding cache (default: OUT/.embeddings)."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not read or write the embedding cache."
    ),
    registry: Path | None = REGISTRY,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Evaluate one model on benchmarks; one result JSON per benchmark, finished ones skipped."""
    from biocap_eval.runner import ModelSpec, RunOptions, run_selected
    from biocap_eval.tasks import Settings

    if head not in ("tax", "caption"):
        raise typer.BadParameter(f"--head must be tax or caption, not {head!r}")
    if label_type is not None and label_type not in LABEL_TYPES:
        raise typer.BadParameter(f"--label-type must be one of {LABEL_TYPES}, not {label_type!r}")
    if inquire_k is not None and inquire_k < 1:
        raise typer.BadParameter("--inquire-k must be at least 1")
    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {PRECISIONS}, not {precision!r}")
    try:
        settings = Settings(
            label_type=label_type,
            per_class=per_class,
            inquire_k=inquire_k,
            retrieval_prefix=retrieval_prefix,
            prefix_bug=prefix_bug,
            skip_missing=skip_missing,
            strict=strict,
        )
        settings = settings.with_templates(templates) if templates is not None else settings
        spec = ModelSpec(model, pretrained, head=head, precision=precision, name=name)
        options = RunOptions(
            data_root=data_root,
            out_dir=out,
            device=device,
            batch_size=batch_size,
            workers=workers,
            cache_dir=None if no_cache else (cache_dir or out / ".embeddings"),
            force=force,
            progress=not quiet,
            gpu_decode=gpu_decode,
        )
        summary = run_selected(
            spec, benchmarks, settings, options, registry=registry, log=typer.echo
        )
    except (BioCAPError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from exc
    if summary.failed:
        raise _fail(
            BioCAPError(f"{len(summary.failed)} benchmark(s) failed: {', '.join(summary.failed)}")
        )


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="Folder of result JSONs (a `run --out` folder)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the report (default: RESULTS_DIR)."
    ),
) -> None:
    """Write the comparison tables (markdown, CSV) and a bar chart (PNG), laid out as the
    paper's."""
    from biocap_eval.report import write_report

    try:
        files = write_report(results_dir, out)
    except BioCAPError as exc:
        raise _fail(exc) from exc
    typer.echo((files["markdown"]).read_text())
    for kind, path in files.items():
        typer.echo(f"{kind}: {path}")


@app.command()
def version() -> None:
    """Print the package version."""
    from biocap_eval import __version__

    typer.echo(__version__)
