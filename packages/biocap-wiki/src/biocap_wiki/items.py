"""The spider's two item types, with biocap-core's wiki table columns as fields.

They are built from the schemas (``class`` is a Python keyword, so a
dataclass could not carry it) so the spider's output and the parquet tables
cannot drift apart. Feeds can route them separately with ``item_classes``.
"""

from __future__ import annotations

import scrapy

from biocap_core import schemas


def _item_class(name: str, schema: schemas.Schema, doc: str) -> type[scrapy.Item]:
    fields = {column: scrapy.Field() for column in schema.column_names}
    return type(name, (scrapy.Item,), {"__doc__": doc, "__module__": __name__, **fields})


WikiDescription = _item_class(
    "WikiDescription",
    schemas.WIKI_DESCRIPTIONS,
    "A description of one (binomial, taxonomy) with provenance: page, revision, section, time,"
    " licence.",
)
WikiError = _item_class(
    "WikiError",
    schemas.WIKI_ERRORS,
    "A (binomial, taxonomy) without a description, with the reason and a detail.",
)
