"""``python -m biocap_captions``: the CLI."""

from biocap_captions.cli import app

app()
