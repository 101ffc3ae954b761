"""``python -m biocap_wiki`` runs the ``biocap-wiki`` command line."""

from biocap_wiki.cli import app

app()
