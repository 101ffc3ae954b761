"""``biocap-captions``: caption shards or a catalog (``run``), summarise a run (``stats``), show the prompt."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from biocap_core.errors import BioCAPError

from biocap_captions.engine import DEFAULT_MODEL, SamplingConfig
from biocap_captions.engines import ENGINES, EngineSettings
from biocap_core.jobs import JobSpecError
from biocap_captions.prompt import PROMPT_VERSION, FormatExamples, PromptBuilder, PromptParts

# Plain help text: rich's table cuts long option names ("--max-consecutive-fa…") at 80 columns
# when the output is not a terminal (piped to less, grep, CI logs).
app = typer.Typer(help="Trait captions for TreeOfLife images with vLLM or an OpenAI-compatible server.",
                  no_args_is_help=True, rich_markup_mode=None)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def run(
    out: Path = typer.Option(..., "--out", help="Output folder: captions/, errors/ and partial/ per unit."),
    shards: Optional[str] = typer.Option(None, help="Input shards: brace pattern, '::' joins patterns."),
    catalog: Optional[Path] = typer.Option(
        None, help="Catalog table. Without --shards its image_path rows are the input; it also carries the "
                   "7 ranks that species-level --wiki descriptions are joined on."),
    image_root: Optional[Path] = typer.Option(None, help="Folder image_path is relative to (default: the catalog's)."),
    rows_per_unit: int = typer.Option(10_000, help="Catalog rows per output unit."),
    wiki: Optional[Path] = typer.Option(None, help="Wiki descriptions: uuid,description or species-level (needs --catalog)."),
    format_examples: Optional[Path] = typer.Option(None, help="class,description table (default: the original's 347 classes)."),
    max_wiki_chars: int = typer.Option(600, help="Wiki excerpt length, cut at a sentence boundary."),
    word_limit: int = typer.Option(20, help="Word limit asked for in the prompt and flagged in the table."),
    engine: str = typer.Option(
        "vllm", help=f"Caption engine: {', '.join(ENGINES)} (vllm: offline, in this process; "
                     "openai: a chat-completions server)."),
    model: str = typer.Option(DEFAULT_MODEL, help="Model path or name (for openai: the served model name)."),
    temperature: float = typer.Option(0.6),
    top_p: float = typer.Option(0.8),
    max_tokens: int = typer.Option(50),
    seed: Optional[int] = typer.Option(None, help="Sampling seed (per request)."),
    quantization: Optional[str] = typer.Option(
        None, help="vllm: quantization method (default awq); 'none' disables it."),
    tensor_parallel_size: Optional[int] = typer.Option(
        None, help="vllm: GPUs per model (default 1)."),
    max_model_len: Optional[int] = typer.Option(None, help="vllm: context length (default 2048)."),
    dtype: Optional[str] = typer.Option(None, help="vllm: weight dtype (default auto)."),
    image_placeholder: Optional[str] = typer.Option(
        None, help="vllm: image placeholder for chat templates that take only text "
                   "(default <image>; '' to require image parts)."),
    max_image_side: Optional[int] = typer.Option(
        None, help="vllm: shrink decoded images to this longest side."),
    prefix_caching: Optional[bool] = typer.Option(
        None, "--prefix-caching/--no-prefix-caching",
        help="vllm: automatic prefix caching (default: vLLM's)."),
    base_url: Optional[str] = typer.Option(
        None, help="openai: server URL up to /v1 (default http://127.0.0.1:8000/v1)."),
    api_key: Optional[str] = typer.Option(None, envvar="OPENAI_API_KEY", help="openai: bearer token."),
    concurrency: Optional[int] = typer.Option(
        None, help="openai: requests in flight (default 16)."),
    timeout: Optional[float] = typer.Option(
        None, help="openai: seconds per request before a retry (default 120)."),
    max_retries: Optional[int] = typer.Option(
        None, help="openai: retries on 429, 5xx and timeouts (default 5)."),
    engine_option: list[str] = typer.Option(
        [], "--engine-option", help="NAME=VALUE: any option of the chosen engine (repeatable)."),
    batch_size: int = typer.Option(256, help="Samples per engine call; bounds memory."),
    num_shards: Optional[int] = typer.Option(None, help="Number of jobs the units are split over (else SLURM array)."),
    shard_index: Optional[int] = typer.Option(None, help="This job's index, 0-based."),
    write_shards: Optional[Path] = typer.Option(None, help="Also write each shard again with caption.txt here."),
    checkpoint_seconds: float = typer.Option(60.0, help="Checkpoint unfinished units this often."),
    max_consecutive_failures: int = typer.Option(100, help="Stop when this many samples fail in a row."),
    retry_errors: bool = typer.Option(False, help="Caption again the samples of finished units that got an error."),
    strict: bool = typer.Option(False, help="Exit 1 when any sample of this job's units has no caption."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Caption every image of this job's units; a rerun skips finished units and finishes partial ones."""
    from biocap_captions.pipeline import RunOptions
    from biocap_captions.runner import Inputs
    from biocap_captions.runner import run as run_job

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would bury the progress bar
    if shards is None and catalog is None:
        raise typer.BadParameter("give --shards, or --catalog with an image_path column", param_hint="--shards")
    try:
        engine_settings = EngineSettings.from_flags(
            engine, model, SamplingConfig(temperature, top_p, max_tokens, seed),
            dict(quantization=quantization, tensor_parallel_size=tensor_parallel_size,
                 max_model_len=max_model_len, dtype=dtype, image_placeholder=image_placeholder,
                 max_image_side=max_image_side,
                 enable_prefix_caching=prefix_caching, base_url=base_url, api_key=api_key,
                 concurrency=concurrency, timeout=timeout, max_retries=max_retries),
            engine_option)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--engine/--engine-option") from None
    try:
        report = run_job(
            Inputs(shards=shards, catalog=catalog, image_root=image_root, rows_per_unit=rows_per_unit, wiki=wiki,
                   format_examples=format_examples, max_wiki_chars=max_wiki_chars, word_limit=word_limit),
            engine_settings,
            RunOptions(out=out, batch_size=batch_size, checkpoint_seconds=checkpoint_seconds,
                       write_shards=write_shards, max_consecutive_failures=max_consecutive_failures,
                       progress=progress, retry_errors=retry_errors),
            num_shards, shard_index)
    except (BioCAPError, JobSpecError, FileNotFoundError, ImportError) as exc:
        _fail(str(exc))
    rate = (report.captions + report.errors) / report.seconds if report.seconds else 0.0
    typer.echo(f"finished {len(report.finished)} units ({len(report.skipped)} were already done): "
               f"{report.captions} captions, {report.errors} errors, {rate:.1f} images/s", err=True)
    if report.errors_left:
        typer.echo(f"{report.errors_left} samples of this job's units have no caption (reasons in {out / 'errors'}); "
                   "rerun with --retry-errors to try them again", err=True)
    for name, reason in report.failed.items():
        typer.echo(f"unit {name} failed: {reason}", err=True)
    if report.failed or (strict and report.errors_left):
        raise typer.Exit(1)


@app.command()
def stats(
    out: Path = typer.Argument(..., help="Output folder of one or more runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Summarise a run: counts, failures, length histogram, share naming the species."""
    from biocap_captions.stats import render, summarize

    try:
        summary = summarize(out)
    except (BioCAPError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(summary, indent=2) if as_json else render(summary))


@app.command("show-prompt")
def show_prompt(
    name: str = typer.Option(..., help="Display (common) name."),
    scientific: str = typer.Option("", help="Scientific name."),
    klass: str = typer.Option("", "--class", help="Taxonomic class (selects the format examples)."),
    wiki: str = typer.Option("", help="Wiki text to excerpt."),
    format_examples: Optional[Path] = typer.Option(None),
    max_wiki_chars: int = typer.Option(600),
    word_limit: int = typer.Option(20),
) -> None:
    """Print the instruction one sample would get (before the model's chat template)."""
    builder = PromptBuilder(FormatExamples.load(format_examples), max_wiki_chars, word_limit)
    built = builder.build(PromptParts(name, scientific, klass, wiki or None))
    typer.echo(f"# prompt {PROMPT_VERSION}; class examples: {built.class_examples}; wiki used: {built.wiki_used}")
    typer.echo(built.instruction)


@app.command()
def version() -> None:
    """Print the package version and the prompt version."""
    from biocap_captions import __version__

    typer.echo(f"{__version__} (prompt {PROMPT_VERSION})")
