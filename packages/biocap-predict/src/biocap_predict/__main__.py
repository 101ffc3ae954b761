"""``python -m biocap_predict`` (and ``torchrun -m biocap_predict``): the CLI."""

from biocap_predict.cli import app

app(prog_name="biocap-predict")
