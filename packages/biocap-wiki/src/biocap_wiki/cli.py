"""``biocap-wiki``: crawl Wikipedia species descriptions, convert feeds, merge onto a catalog."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from biocap_core.errors import BioCAPError

app = typer.Typer(
    help="Species descriptions from the MediaWiki Action API (the wikispecies Scrapy spider).",
    no_args_is_help=True,
)


def _exit_with(exc: Exception) -> NoReturn:
    """One line, exit status 1: the path and the reason of an OSError, else the error's message."""
    typer.echo(
        (
            f"error: {exc.filename}: {exc.strerror}"
            if isinstance(exc, OSError) and exc.filename
            else f"error: {exc}"
        ),
        err=True,
    )
    raise typer.Exit(1)


def _parse_sets(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        if "=" not in value:
            raise typer.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint="--set")
        name, _, setting = value.partition("=")
        out[name.strip()] = setting
    return out


@app.command()
def crawl(
    species: Path = typer.Argument(
        ..., help="Species CSV (binomial,kingdom,phylum,class,order,family,genus,species)."
    ),
    out: Path = typer.Option(..., "--out", help="Descriptions parquet (wiki_descriptions schema)."),
    errors: Path | None = typer.Option(
        None, help="Error rows parquet (default: <out stem>_errors.parquet)."
    ),
    api: str | None = typer.Option(None, help="Action API URL (default: English Wikipedia)."),
    contact: str | None = typer.Option(
        None,
        envvar="BIOCAP_WIKI_CONTACT",
        help="E-mail or page for the User-Agent (required by Wikimedia).",
    ),
    jobdir: Path | None = typer.Option(
        None, help="Job folder for pause/resume and the feed (default: <out>.job)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="HTTP cache folder (default: ~/.cache/biocap-wiki/httpcache)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache API responses on disk."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard the job folder and start over."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", help="Scrapy or WIKI_* setting as NAME=VALUE (repeatable)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Scrapy's log (INFO) instead of a progress line."
    ),
) -> None:
    """Describe every species of SPECIES; Ctrl-C pauses, the same command resumes.

    Exit status: 0 done; 1 bad input, an unreachable API, or request failures (the same command
    retries them); 130 paused.
    """
    from biocap_wiki.crawl import crawl as run_crawl
    from biocap_wiki.crawl import default_cache_dir, default_errors_path
    from biocap_wiki.spiders.wikispecies import API_UNREACHABLE

    output = {"LOG_LEVEL": "INFO"} if verbose else {"LOG_LEVEL": "WARNING", "WIKI_PROGRESS": True}
    try:
        result = run_crawl(
            species,
            out,
            errors,
            api=api,
            contact=contact,
            jobdir=jobdir,
            cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
            fresh=fresh,
            settings={**output, **_parse_sets(set_)},
        )
    except (BioCAPError, ValueError, OSError) as exc:
        _exit_with(exc)
    if result.finish_reason == API_UNREACHABLE:
        typer.echo(
            "error: the API could not be reached (see above) and nothing was fetched; run the same "
            "command again once it can be",
            err=True,
        )
        raise typer.Exit(1)
    if not result.finished:
        typer.echo(
            f"crawl stopped ({result.finish_reason}); run the same command again to resume "
            f"from {result.feed.parent}",
            err=True,
        )
        raise typer.Exit(130)
    reasons = result.errors["reason"].value_counts(sort=True).rows() if result.errors.height else []
    typer.echo(f"{result.descriptions.height} descriptions -> {out}")
    typer.echo(
        f"{result.errors.height} errors -> {errors or default_errors_path(out)}"
        + (f" ({', '.join(f'{r}: {n}' for r, n in reasons)})" if reasons else "")
    )
    if result.request_failures:
        typer.echo(
            f"error: {result.request_failures} species ended with request failures; run the same "
            "command again to retry them",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def tables(
    feed: Path = typer.Argument(
        ..., help="JSON-lines feed of `scrapy crawl wikispecies -o FEED.jsonl`."
    ),
    out: Path = typer.Option(..., "--out", help="Descriptions parquet."),
    errors: Path | None = typer.Option(
        None, help="Error rows parquet (default: <out stem>_errors.parquet)."
    ),
) -> None:
    """Convert a spider feed into the descriptions and errors parquet tables."""
    from biocap_core import schemas
    from biocap_wiki.crawl import check_writable, default_errors_path
    from biocap_wiki.tables import read_feed

    if not feed.is_file():
        typer.echo(f"error: {feed}: no such file", err=True)
        raise typer.Exit(1)
    try:
        check_writable(out)
        check_writable(errors or default_errors_path(out))
        descriptions, failed = read_feed(feed)
    except (BioCAPError, OSError) as exc:
        _exit_with(exc)
    schemas.write_parquet_atomic(descriptions, out)
    schemas.write_parquet_atomic(failed, errors or default_errors_path(out))
    typer.echo(
        f"{descriptions.height} descriptions -> {out}; {failed.height} errors -> "
        f"{errors or default_errors_path(out)}"
    )


@app.command()
def merge(
    catalog: Path = typer.Argument(
        ..., help="TreeOfLife catalog (uuid + 7 ranks), CSV or parquet."
    ),
    descriptions: Path = typer.Argument(
        ..., help="Species descriptions (binomial, 7 ranks, content)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Per-uuid descriptions parquet (uuid_descriptions schema)."
    ),
) -> None:
    """Give every catalog image the description of its own 7-rank taxon, for biocap-captions."""
    from biocap_core import schemas
    from biocap_core.descriptions import per_uuid_descriptions
    from biocap_wiki.crawl import check_writable

    try:
        check_writable(out)
        catalog_df = schemas.CATALOG.read(catalog)
        descriptions_df = schemas.SPECIES_LIST.read(descriptions, require=["content"])
        merged = per_uuid_descriptions(catalog_df, descriptions_df)
    except (BioCAPError, OSError) as exc:
        _exit_with(exc)
    schemas.write_parquet_atomic(merged, out)
    described = merged["description"].is_not_null().sum()
    typer.echo(f"{described} of {merged.height} images have a description -> {out}")


@app.command()
def version() -> None:
    """Print the package version."""
    from biocap_wiki import __version__

    typer.echo(__version__)
