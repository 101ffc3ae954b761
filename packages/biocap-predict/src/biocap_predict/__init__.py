"""biocap-predict: name the organism in a photo with any BioCAP/BioCLIP-style model."""

from importlib.metadata import version as _version

__version__ = _version("biocap-predict")
