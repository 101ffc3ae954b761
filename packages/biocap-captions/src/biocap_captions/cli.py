"""``biocap-captions`` entry point (commands land with the captions issue)."""

import typer

app = typer.Typer(help="biocap-captions (not implemented yet).", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the package version."""
    from biocap_captions import __version__

    typer.echo(__version__)
