"""biocap-core: what every BioCAP package shares (model, checkpoints, preprocessing, text formats,
schemas, toy data)."""

from importlib.metadata import version as _version

__version__ = _version("biocap-core")
