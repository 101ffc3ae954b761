"""``biocap-eval`` entry point (commands land with the eval issue)."""

import typer

app = typer.Typer(help="biocap-eval (not implemented yet).", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the package version."""
    from biocap_eval import __version__

    typer.echo(__version__)
