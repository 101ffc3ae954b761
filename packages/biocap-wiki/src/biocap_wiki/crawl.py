"""Run the ``wikispecies`` spider from Python and get parquet tables, without knowing Scrapy.

:func:`crawl` is what ``biocap-wiki crawl`` calls. It runs the same spider
``scrapy crawl wikispecies`` runs, with the project's settings, a job folder
(``JOBDIR`` plus the feed, so an interrupted crawl resumes where it stopped)
and an HTTP cache folder, then converts the feed to the ``wiki_descriptions``
and ``wiki_errors`` tables. Scrapy's Twisted reactor cannot be restarted, so
call it once per process (run it in a subprocess to crawl again).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from biocap_core import schemas
from biocap_core.errors import UnwritableFolder
from biocap_core.fileio import writable_folder
from biocap_wiki.resolve import REQUEST_FAILED
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

    @property
    def request_failures(self) -> int:
        """(binomial, taxonomy) rows whose last outcome is ``request failed``: the next run asks
        again."""
        return self.errors.filter(pl.col("reason") == REQUEST_FAILED).height


def default_errors_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}_errors{out.suffix or '.parquet'}")


def default_cache_dir() -> Path:
    """The project settings' HTTP cache folder (``$XDG_CACHE_HOME/biocap-wiki/httpcache``)."""
    from biocap_wiki.settings import HTTPCACHE_DIR

    return Path(HTTPCACHE_DIR)


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Create the folder of ``path`` (or ``path`` itself with ``folder``) and make sure a file can
    be written in it; raise :class:`OSError` naming ``path`` otherwise.

    Called before crawling, so a mistyped ``--out`` fails at once rather than after the crawl.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise OSError(errno.EISDIR, "cannot write here: it is a folder", str(path))
    try:
        writable_folder(path if folder else path.parent)
    except UnwritableFolder as exc:
        raise OSError(exc.errno, f"cannot write here: {exc.reason}", str(path)) from None


def crawl_settings(
    jobdir: Path,
    *,
    api: str | None = None,
    contact: str | None = None,
    cache_dir: Path | None = None,
    overrides: Mapping[str, object] | None = None,
):
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


def crawl(
    species: str | os.PathLike,
    out: str | os.PathLike | None = None,
    errors: str | os.PathLike | None = None,
    *,
    api: str | None = None,
    contact: str | None = None,
    jobdir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    settings: Mapping[str, object] | None = None,
) -> CrawlResult:
    """Describe every species of a species list; write parquet tables when the crawl finishes.

    ``jobdir`` (default ``<out>.job``) keeps the resumable state and the feed:
    run again with the same ``jobdir`` after an interruption to continue, or
    pass ``fresh=True`` to start over. ``cache_dir`` holds the HTTP cache (none
    if ``None``). ``settings`` override Scrapy or ``WIKI_*`` settings. The
    tables are written to ``out`` and ``errors`` (default
    ``<out stem>_errors.parquet``) only if the crawl finished; they can hold
    ``request failed`` rows (:attr:`CrawlResult.request_failures`), which the
    next run with the same ``jobdir`` asks for again. Folders that cannot be
    written raise :class:`OSError` before the crawl starts.
    """
    from scrapy.crawler import CrawlerProcess

    from biocap_wiki.spiders.wikispecies import WikispeciesSpider, check_contact

    load_species(species)  # fail before starting Scrapy if the list is unreadable
    if jobdir is None:
        if out is None:
            raise ValueError("give out= or jobdir= so the crawl has a folder for its job state")
        jobdir = Path(out).with_suffix(".job")
    jobdir = Path(jobdir)
    if out is not None:
        check_writable(out)
        check_writable(errors or default_errors_path(out))
    if cache_dir is not None:
        check_writable(cache_dir, folder=True)
    if fresh and jobdir.is_dir():
        shutil.rmtree(jobdir)
    check_writable(jobdir, folder=True)
    scrapy_settings = crawl_settings(
        jobdir,
        api=api,
        contact=contact,
        cache_dir=Path(cache_dir) if cache_dir else None,
        overrides=settings,
    )
    check_contact(scrapy_settings.get("WIKI_API"), scrapy_settings.get("WIKI_CONTACT"))
    process = CrawlerProcess(scrapy_settings)
    crawler = process.create_crawler(WikispeciesSpider)
    process.crawl(crawler, species=str(species))
    with _signal_handlers_kept():
        process.start()
    stats = crawler.stats.get_stats()
    descriptions, failed = read_feed(jobdir / FEED_NAME)
    result = CrawlResult(
        str(stats.get("finish_reason", "unknown")), stats, jobdir / FEED_NAME, descriptions, failed
    )
    if result.finished and out is not None:
        schemas.write_parquet_atomic(descriptions, out)
        schemas.write_parquet_atomic(failed, errors or default_errors_path(out))
    return result


#: The signals Scrapy takes over while it crawls
#: (``scrapy.utils.ossignal.install_shutdown_handlers``).
_SHUTDOWN_SIGNALS = tuple(
    getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n)
)


@contextlib.contextmanager
def _signal_handlers_kept():
    """Scrapy installs its shutdown handlers for Ctrl-C and SIGTERM (a first Ctrl-C stops the crawl
    cleanly, keeping its job state) and leaves them installed when the crawl returns; put the
    caller's back, so Ctrl-C in a notebook or script that called :func:`crawl` acts as it did
    before the call."""
    # handlers belong to the process and are set from its main thread only
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in _SHUTDOWN_SIGNALS} if main else {}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if handler is not None:
                signal.signal(number, handler)
