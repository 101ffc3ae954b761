"""``biocap-wiki`` entry point (commands land with the wiki issue)."""

import typer

app = typer.Typer(help="biocap-wiki (not implemented yet).", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the package version."""
    from biocap_wiki import __version__

    typer.echo(__version__)
