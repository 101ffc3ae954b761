"""A progress line for ``biocap-wiki crawl``, whose Scrapy log is kept at WARNING.

Scrapy's LogStats reports pages and items per minute through the log; a
person running the CLI wants to know how many species are done. :class:`Progress`
reads the spider's stats every ``WIKI_PROGRESS_INTERVAL`` seconds and writes
one line to stderr: rewritten in place on a terminal, a new line otherwise
(a log file), and a last one when the crawl closes. It is off unless ``WIKI_PROGRESS`` is set; the
CLI sets it unless ``-v`` asks for Scrapy's own log.
"""

from __future__ import annotations

import sys
from typing import TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call


class Progress:
    def __init__(self, stats, interval: float, stream: TextIO = sys.stderr):
        self.stats = stats
        self.interval = interval
        self.stream = stream
        self.task = None

    @classmethod
    def from_crawler(cls, crawler) -> Progress:
        if not crawler.settings.getbool("WIKI_PROGRESS"):
            raise NotConfigured
        progress = cls(crawler.stats, crawler.settings.getfloat("WIKI_PROGRESS_INTERVAL", 5.0))
        crawler.signals.connect(progress.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(progress.spider_closed, signal=signals.spider_closed)
        return progress

    def spider_opened(self) -> None:
        self.task = create_looping_call(self.report)
        self.task.start(self.interval, now=False)

    def spider_closed(self) -> None:
        if self.task is not None and self.task.running:
            self.task.stop()
        self.report(last=True)

    def line(self) -> str:
        """``"120/2909 species: 100 described, 20 errors; 14 requests"``: (binomial, taxonomy) rows
        with an outcome, counting those of earlier runs of the job."""
        stats = self.stats.get_stats()
        described = stats.get("wiki/descriptions", 0)
        errors = sum(v for k, v in stats.items() if k.startswith("wiki/errors/"))
        requests = sum(v for k, v in stats.items() if k.startswith("wiki/requests/"))
        done = stats.get("wiki/rows_before", 0) + described + errors
        return (
            f"{done}/{stats.get('wiki/rows', '?')} species: {described} described, {errors} errors;"
            f" {requests} requests"
        )

    def report(self, last: bool = False) -> None:
        line = self.line()
        if not self.stream.isatty():
            self.stream.write(line + "\n")
        else:
            # cleared and rewritten, the cursor left at its start: the next report, or a log line
            # (a warning, a retry given up), writes over it rather than after it
            self.stream.write(f"\x1b[K{line}" + ("\n" if last else "\r"))
        self.stream.flush()
