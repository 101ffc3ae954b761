"""Exceptions that name what was wrong and where, so a user can fix the input."""


class BioCAPError(Exception):
    """Base class of every error the toolkit raises on bad input."""


class SchemaError(BioCAPError, ValueError):
    """A table is missing a column, or a column holds values of the wrong type."""


class TaxonParseError(BioCAPError, ValueError):
    """A taxonTag text could not be parsed."""


class ImageError(BioCAPError, ValueError):
    """An input image is missing or cannot be decoded; the message names it."""


class CheckpointError(BioCAPError, RuntimeError):
    """A checkpoint is unreadable or its keys do not fit the model."""


class ShardError(BioCAPError, ValueError):
    """A webdataset shard or one of its samples is malformed."""


class UnwritableFolder(BioCAPError, OSError):
    """An output folder cannot be created or written; ``reason`` says what is in the way.

    An ``OSError`` too (the original's errno and strerror), so callers that report write failures
    by the OS's words keep doing so."""

    def __init__(self, path, cause: OSError, reason: str):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.reason = reason


class EmptyTaxonError(BioCAPError, ValueError):
    """A taxon has no rank left after BioCLIP's cleaning, so it has no TreeOfLife-10M text."""


class GpuDecodeUnavailable(BioCAPError, RuntimeError):
    """``--gpu-decode`` was asked for where there is no CUDA device to decode on."""
