"""Run the ``wikispecies`` spider from Python and get parquet tables, without knowing Scrapy.

:func:`crawl` is what ``biocap-wiki crawl`` calls. It runs the same spider
``scrapy crawl wikispecies`` runs, with the project's settings, a job folder
(``JOBDIR`` plus the feed, so an interrupted crawl resumes where it stopped)
and an HTTP cache folder, then converts the feed to the ``wiki_descriptions``
and ``wiki_errors`` tables. Scrapy's Twisted reactor cannot be restarted, so
call it once per process (run it in a subprocess to crawl again).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from biocap_core import schemas

from biocap_wiki.tables import load_species, read_feed

FEED_NAME = "feed.jsonl"


@dataclass
class CrawlResult:
    """How the crawl ended, its Scrapy stats, and the tables read from its feed."""

    finish_reason: str
    stats: dict
    feed: Path
    descriptions: pl.DataFrame
    errors: pl.DataFrame

    @property
    def finished(self) -> bool:
        return self.finish_reason == "finished"


def default_errors_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}_errors{out.suffix or '.parquet'}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "biocap-wiki" / "httpcache"


def crawl_settings(jobdir: Path, *, api: str | None = None, contact: str | None = None,
                   cache_dir: Path | None = None, overrides: Mapping[str, object] | None = None):
    """The project settings plus this job's folders and the caller's overrides."""
    from scrapy.settings import Settings

    settings = Settings()
    settings.setmodule("biocap_wiki.settings", priority="project")
    values: dict[str, object] = {
        "JOBDIR": str(jobdir),
        "FEEDS": {str(jobdir / FEED_NAME): {"format": "jsonlines", "overwrite": False}},
    }
    if api:
        values["WIKI_API"] = api
    if contact:
        values["WIKI_CONTACT"] = contact
    if cache_dir is None:
        values["HTTPCACHE_ENABLED"] = False
    else:
        values["HTTPCACHE_DIR"] = str(Path(cache_dir).resolve())
    values.update(overrides or {})
    settings.setdict(values, priority="cmdline")
    return settings


def crawl(species: str | os.PathLike, out: str | os.PathLike | None = None,
          errors: str | os.PathLike | None = None, *, api: str | None = None,
          contact: str | None = None, jobdir: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None, fresh: bool = False,
          settings: Mapping[str, object] | None = None) -> CrawlResult:
    """Describe every species of a species list; write parquet tables when the crawl finishes.

    ``jobdir`` (default ``<out>.job``) keeps the resumable state and the feed:
    run again with the same ``jobdir`` after an interruption to continue, or
    pass ``fresh=True`` to start over. ``cache_dir`` holds the HTTP cache (none
    if ``None``). ``settings`` override Scrapy or ``WIKI_*`` settings. The
    tables are written to ``out`` and ``errors`` (default
    ``<out stem>_errors.parquet``) only if the crawl finished.
    """
    from scrapy.crawler import CrawlerProcess

    from biocap_wiki.spiders.wikispecies import WikispeciesSpider, check_contact

    load_species(species)  # fail before starting Scrapy if the list is unreadable
    if jobdir is None:
        if out is None:
            raise ValueError("give out= or jobdir= so the crawl has a folder for its job state")
        jobdir = Path(out).with_suffix(".job")
    jobdir = Path(jobdir)
    if fresh and jobdir.exists():
        shutil.rmtree(jobdir)
    jobdir.mkdir(parents=True, exist_ok=True)
    scrapy_settings = crawl_settings(jobdir, api=api, contact=contact,
                                     cache_dir=Path(cache_dir) if cache_dir else None, overrides=settings)
    check_contact(scrapy_settings.get("WIKI_API"), scrapy_settings.get("WIKI_CONTACT"))
    process = CrawlerProcess(scrapy_settings)
    crawler = process.create_crawler(WikispeciesSpider)
    process.crawl(crawler, species=str(species))
    process.start()
    stats = crawler.stats.get_stats()
    descriptions, failed = read_feed(jobdir / FEED_NAME)
    result = CrawlResult(str(stats.get("finish_reason", "unknown")), stats, jobdir / FEED_NAME,
                         descriptions, failed)
    if result.finished and out is not None:
        schemas.write_parquet_atomic(descriptions, out)
        schemas.write_parquet_atomic(failed, errors or default_errors_path(out))
    return result
