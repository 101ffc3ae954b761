"""biocap-wiki: species descriptions from the MediaWiki Action API (the ``wikispecies`` Scrapy
spider).

Python API: :func:`crawl` (run the spider, get the tables), :func:`load_species`,
:func:`read_feed`, :func:`describe` (wikitext to a description) and
:func:`ranks_agree` (the homonym check). ``biocap-wiki merge`` uses
:func:`biocap_core.descriptions.per_uuid_descriptions`.
"""

from importlib.metadata import version as _version

__version__ = _version("biocap-wiki")

from biocap_wiki.crawl import CrawlResult, crawl  # noqa: E402
from biocap_wiki.extract import describe  # noqa: E402
from biocap_wiki.tables import load_species, read_feed  # noqa: E402
from biocap_wiki.taxobox import ranks_agree  # noqa: E402

__all__ = [
    "CrawlResult",
    "__version__",
    "crawl",
    "describe",
    "load_species",
    "ranks_agree",
    "read_feed",
]
