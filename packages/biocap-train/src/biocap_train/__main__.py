"""``python -m biocap_train`` runs the ``biocap-train`` command line."""

from biocap_train.cli import main

main()
