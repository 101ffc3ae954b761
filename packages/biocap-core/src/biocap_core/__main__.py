"""``python -m biocap_core`` runs the ``biocap-core`` CLI."""

from biocap_core.cli import app

app(prog_name="biocap-core")
