"""Exceptions that name what was wrong and where, so a user can fix the input."""


class BioCAPError(Exception):
    """Base class of every error the toolkit raises on bad input."""


class SchemaError(BioCAPError, ValueError):
    """A table is missing a column, or a column holds values of the wrong type."""


class TaxonParseError(BioCAPError, ValueError):
    """A taxonTag text could not be parsed."""


class CheckpointError(BioCAPError, RuntimeError):
    """A checkpoint is unreadable or its keys do not fit the model."""


class ShardError(BioCAPError, ValueError):
    """A webdataset shard or one of its samples is malformed."""


class EmptyTaxonError(BioCAPError, ValueError):
    """A taxon has no rank left after BioCLIP's cleaning, so it has no TreeOfLife-10M text."""
