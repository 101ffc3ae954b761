"""Errors of biocap-predict; every one names the input that was wrong so the user can fix it."""

from biocap_core.errors import BioCAPError, ImageError  # noqa: F401 (ImageError: part of this API)


class TaxaIndexError(BioCAPError, ValueError):
    """A taxa index is missing, incomplete, or was built with another model."""


class PredictInputError(BioCAPError, ValueError):
    """A label list, bins file, rank, subset or embeddings file cannot be used."""
