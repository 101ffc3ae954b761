"""The ``wikispecies`` spider: species descriptions from the MediaWiki Action API.

Run it from ``packages/biocap-wiki``::

    scrapy crawl wikispecies -a species=species.csv -O descriptions.jsonl
    scrapy crawl wikispecies -a species=species.csv -a api=http://127.0.0.1:8080/w/api.php ...

Each input (binomial, taxonomy) yields exactly one item: a
:data:`~biocap_wiki.items.WikiDescription` or a :data:`~biocap_wiki.items.WikiError`.
Titles are fetched 50 to a request; names that do not resolve are searched
and their hits fetched in shared batches too. All progress lives in
``self.state`` (the species list position, the open :class:`Lookup` s and the
titles waiting for a batch), which Scrapy's ``JOBDIR`` saves on pause, so a
resumed job neither repeats nor loses a species. Use ``-o`` (append), not
``-O``, when resuming, or the first run's items are overwritten.

A request that fails for good (no connection, or 5xx after every retry) is
not an outcome: its species get ``request failed`` rows but stay open in the
state, so the next run with the same ``JOBDIR`` asks again. How a crawl ended
is in the stats: ``wiki/paused`` after Ctrl-C, ``wiki/open`` for the species
still open, and the finish reason ``api_unreachable`` when the very first
requests could not connect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlparse

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider, DontCloseSpider
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_from_coro

from biocap_core.taxonomy import RANKS
from biocap_wiki import __version__, api
from biocap_wiki.items import WikiDescription, WikiError
from biocap_wiki.middlewares import CONNECT_ERRORS, status_message
from biocap_wiki.resolve import Action, Failed, Fetch, Found, Lookup, Render, Search
from biocap_wiki.tables import fingerprint, load_species
from biocap_wiki.taxobox import rendered_ranks

_WIKIMEDIA_HOSTS = (
    "wikipedia.org",
    "wikimedia.org",
    "wikidata.org",
    "wikispecies.org",
    "wiktionary.org",
)
_FOLLOW_UP_PRIORITY = 10  # finish started species before starting new ones
#: Finish reason of a crawl whose first requests could not connect.
API_UNREACHABLE = "api_unreachable"


def check_contact(api_url: str, contact: str) -> None:
    """Refuse to crawl a Wikimedia site without contact information in the User-Agent."""
    host = urlparse(api_url).hostname or ""
    if host.endswith(_WIKIMEDIA_HOSTS) and not contact:
        raise ValueError(
            f"{host} asks every client for contact information (Wikimedia User-Agent policy): set "
            "WIKI_CONTACT (-s WIKI_CONTACT=you@example.org, --contact, or BIOCAP_WIKI_CONTACT)"
        )


def user_agent(contact: str) -> str:
    """The User-Agent Wikimedia's policy asks for: tool/version (contact) library/version."""
    return f"biocap-wiki/{__version__} ({contact or 'no contact set'}) Scrapy/{scrapy.__version__}"


class WikispeciesSpider(scrapy.Spider):
    name = "wikispecies"

    def __init__(
        self, species: str | None = None, api: str | None = None, *args: Any, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        if not species:
            raise ValueError(
                "the species list is required: scrapy crawl wikispecies -a species=PATH.csv"
            )
        self.species_path = species
        self.api_arg = api
        self.species = load_species(species)  # fails early, naming the file, column and rows

    @classmethod
    def update_settings(cls, settings) -> None:
        super().update_settings(settings)
        # Below -s USER_AGENT=..., above the project default.
        settings.set("USER_AGENT", user_agent(settings.get("WIKI_CONTACT", "")), priority="spider")
        # Every request goes to one host, so the engine hands the downloader no more requests than
        # that host's slot sends at once (below -s CONCURRENT_REQUESTS=...). The others wait in the
        # scheduler, which JOBDIR saves, and not in the downloader's queue, which a pause would
        # still send one by one at the polite pace (Scrapy's default lets 16 wait there).
        settings.set(
            "CONCURRENT_REQUESTS",
            settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN"),
            priority="spider",
        )

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any) -> WikispeciesSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.api = spider.api_arg or s.get("WIKI_API")
        spider.batch_size = s.getint("WIKI_BATCH_SIZE")
        if not 1 <= spider.batch_size <= 50:
            raise ValueError(
                f"WIKI_BATCH_SIZE must be 1..50 (the API's title limit), got {spider.batch_size}"
            )
        spider.maxlag = s.getint("WIKI_MAXLAG")
        spider.search_limit = s.getint("WIKI_SEARCH_LIMIT")
        spider.license = s.get("WIKI_LICENSE")
        check_contact(spider.api, s.get("WIKI_CONTACT"))
        # binomials whose requests were re-sent, or failed for good, in this run: not re-sent again
        # before the next run (a failed request has had all its retries)
        spider.not_again: set[str] = set()
        crawler.signals.connect(spider.spider_idle, signal=signals.spider_idle)
        return spider

    # --- state kept in JOBDIR ---------------------------------------------------------------------

    def _open_state(self) -> None:
        """Take up ``self.state`` (restored by Scrapy's SpiderState from JOBDIR, if any)."""
        if getattr(self, "state", None) is None:  # no JOBDIR: SpiderState did not set it
            self.state = {}
        digest = fingerprint(self.species)
        if self.state.setdefault("input", digest) != digest:
            raise CloseSpider(
                f"JOBDIR holds a job for another species list than {self.species_path}; "
                "use a new JOBDIR to start a new job"
            )
        self.state.setdefault("next", 0)
        self.lookups: dict[str, Lookup] = self.state.setdefault("lookups", {})
        # titles waiting for a batched query, each with the binomials that asked for it
        self.buffer: dict[str, list[str]] = self.state.setdefault("buffer", {})

    # --- requests
    # ----------------------------------------------------------------------------------

    def _request(self, url: str, callback, meta: dict, priority: int, kind: str) -> scrapy.Request:
        self.crawler.stats.inc_value(f"wiki/requests/{kind}")
        # Our own state decides what is left to fetch, so the URL dupefilter stays out of it;
        # robots.txt does not apply to the Action API (see settings.py).
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.on_error,
            priority=priority,
            dont_filter=True,
            meta={**meta, "dont_obey_robotstxt": True},
        )

    def _query(
        self,
        titles: dict[str, list[str]],
        priority: int = _FOLLOW_UP_PRIORITY,
        cont: dict | None = None,
        delivered: Iterable[str] = (),
    ) -> scrapy.Request:
        return self._request(
            api.query_url(self.api, titles, self.maxlag, cont),
            self.parse_query,
            {"titles": titles, "delivered": list(delivered)},
            priority,
            "query",
        )

    def _flush(self, everything: bool) -> Iterator[scrapy.Request]:
        """Batched queries for the buffered titles: full batches, or all with ``everything``."""
        while len(self.buffer) >= self.batch_size or (everything and self.buffer):
            titles = list(self.buffer)[: self.batch_size]
            yield self._query({t: self.buffer.pop(t) for t in titles})

    def _act(self, lookup: Lookup, actions: list[Action]) -> Iterator[Any]:
        """Turn a lookup's actions into requests and items."""
        for action in actions:
            if isinstance(action, Fetch):
                for title in action.titles:
                    self.buffer.setdefault(title, []).append(lookup.binomial)
            elif isinstance(action, Search):
                yield self._request(
                    api.search_url(self.api, action.query, self.search_limit, self.maxlag),
                    self.parse_search,
                    {"binomial": lookup.binomial, "query": action.query},
                    _FOLLOW_UP_PRIORITY,
                    "search",
                )
            elif isinstance(action, Render):
                yield self._request(
                    api.parse_url(self.api, action.revid, self.maxlag),
                    self.parse_render,
                    {"binomial": lookup.binomial, "title": action.title, "revid": action.revid},
                    _FOLLOW_UP_PRIORITY,
                    "parse",
                )
            else:
                yield self._item(lookup.binomial, action)
        if lookup.done:
            self.lookups.pop(lookup.binomial, None)
        yield from self._flush(everything=False)

    def _item(self, binomial: str, outcome: Found | Failed) -> scrapy.Item:
        ranks = dict(zip(RANKS, outcome.taxon))
        if isinstance(outcome, Failed):
            self.crawler.stats.inc_value(f"wiki/errors/{outcome.reason}")
            return WikiError(
                binomial=binomial, **ranks, reason=outcome.reason, detail=outcome.detail
            )
        self.crawler.stats.inc_value("wiki/descriptions")
        page = outcome.page
        return WikiDescription(
            binomial=binomial,
            **ranks,
            content=outcome.extract.text,
            title=page.title,
            pageid=page.pageid,
            revid=page.revid,
            url=page.url or f"{self.api}?curid={page.pageid}",
            section=outcome.extract.section,
            fetched_at=page.fetched_at,
            license=self.license,
        )

    # --- start, callbacks
    # --------------------------------------------------------------------------

    async def start(self):
        self._open_state()
        self.logger.info(
            "%d binomials to describe; %d done or started before, %d open",
            len(self.species),
            self.state["next"],
            len(self.lookups),
        )
        # for the progress line: (binomial, taxonomy) rows in the list, and those ended in earlier
        # runs
        stats = self.crawler.stats
        stats.set_value("wiki/rows", sum(len(taxa) for _, taxa in self.species))
        stats.set_value(
            "wiki/rows_before",
            sum(len(taxa) for _, taxa in self.species[: self.state["next"]])
            - sum(len(lookup.taxa) for lookup in self.lookups.values()),
        )
        engine = self.crawler.engine
        while self.state["next"] < len(self.species):
            # Scrapy reads start() eagerly; waiting while the downloader is full keeps the open
            # lookups (memory, and the state a pause must save) to what is actually in flight.
            while engine.running and engine.needs_backout():
                await sleep(0.05)
            chunk = self.species[self.state["next"] : self.state["next"] + self.batch_size]
            self.state["next"] += len(chunk)
            titles: dict[str, list[str]] = {}
            for binomial, taxa in chunk:
                lookup = self.lookups[binomial] = Lookup.new(binomial, taxa)
                for action in lookup.start():
                    if isinstance(action, Fetch):
                        titles.setdefault(action.titles[0], []).append(binomial)
                    else:
                        for out in self._act(lookup, [action]):
                            yield out
            if titles:
                yield self._query(titles, priority=0)

    def _payload(self, response) -> dict:
        return json.loads(response.text)

    def parse_query(self, response):
        titles: dict[str, list[str]] = response.meta["titles"]
        delivered = set(response.meta["delivered"])
        try:
            pages, cont = api.read_query(
                self._payload(response), titles, api.response_time(response.headers.get("Date"))
            )
        except (api.ApiError, ValueError) as exc:
            yield from self._fail({b for bs in titles.values() for b in bs}, str(exc))
            return
        for requested, page in pages.items():
            if requested in delivered:
                continue
            for binomial in titles[requested]:
                if binomial in self.lookups:
                    yield from self._act(
                        self.lookups[binomial], self.lookups[binomial].on_page(requested, page)
                    )
        if cont:
            yield self._query(titles, cont=cont, delivered=delivered | set(pages))

    def parse_search(self, response):
        binomial, query = response.meta["binomial"], response.meta["query"]
        try:
            hits = api.read_search(self._payload(response))
        except (api.ApiError, ValueError) as exc:
            yield from self._fail([binomial], str(exc))
            return
        if binomial in self.lookups:
            yield from self._act(
                self.lookups[binomial], self.lookups[binomial].on_search(query, hits)
            )

    def parse_render(self, response):
        binomial, title = response.meta["binomial"], response.meta["title"]
        try:
            ranks = rendered_ranks(api.read_parse(self._payload(response), response.meta["revid"]))
        except (api.ApiError, ValueError) as exc:
            yield from self._fail([binomial], str(exc))
            return
        if binomial in self.lookups:
            yield from self._act(
                self.lookups[binomial], self.lookups[binomial].on_render(title, ranks)
            )

    def on_error(self, failure) -> list[Any]:
        """A request failed for good: retries are spent (5xx, maxlag), or there is no connection.

        Before any answer came, a failed connection means the API is unreachable (down, offline, or
        a wrong ``api``): stop at once rather than fail every species in turn. Otherwise the
        species it served get ``request failed`` rows and stay open (see :meth:`_fail`).
        """
        request = failure.request
        meta = request.meta
        binomials = (
            [b for bs in meta["titles"].values() for b in bs]
            if "titles" in meta
            else [meta["binomial"]]
        )
        self.crawler.stats.inc_value("wiki/request_failures")
        detail = failure.getErrorMessage()
        if failure.check(HttpError):  # "Ignoring non-200 response" would not say which
            detail = f"HTTP {status_message(failure.value.response.status)} after every retry"
        if failure.check(*CONNECT_ERRORS) and not self.crawler.stats.get_value(
            "response_received_count"
        ):
            self.logger.error(
                "cannot connect to the API at %s: %s", self.api, failure.getErrorMessage()
            )
            # what raising CloseSpider does, without Scrapy logging the failure's traceback
            deferred_from_coro(self.crawler.engine.close_spider_async(reason=API_UNREACHABLE))
            return []
        self.logger.error("giving up on %s: %s", request.url[:200], detail)
        return list(self._fail(binomials, detail))

    def _fail(self, binomials: Iterable[str], detail: str) -> Iterator[Any]:
        """``request failed`` rows, with the lookups kept open for the next run to ask again.

        A request failure says nothing about the species, so it is not a final outcome; the rows
        say what happened in this run, and a later run's outcome supersedes them (the tables
        keep the last row of each species).
        """
        for binomial in dict.fromkeys(binomials):
            if binomial in self.lookups:
                self.not_again.add(binomial)
                yield from self._act(self.lookups[binomial], self.lookups[binomial].fail(detail))

    def spider_idle(self) -> None:
        """Send the last partial batch; re-send what lookups restored from a JOBDIR still wait for
        (requests lost with an interrupted run, or failed for good in an earlier run), once a run.
        """
        requests = list(self._flush(everything=True))
        if not requests:
            for binomial, lookup in list(self.lookups.items()):
                if binomial not in self.not_again:
                    self.not_again.add(binomial)
                    requests.extend(self._act(lookup, lookup.resend()))
            requests.extend(self._flush(everything=True))
        if requests:
            for request in requests:
                self.crawler.engine.crawl(request)
            raise DontCloseSpider

    def closed(self, reason: str) -> None:
        """Log how the crawl ended, and leave it in the stats: ``scrapy crawl`` exits 0 either
        way."""
        stats = self.crawler.stats
        errors = {
            k.rsplit("/", 1)[1]: v
            for k, v in stats.get_stats().items()
            if k.startswith("wiki/errors/")
        }
        self.logger.info(
            "closed (%s): %d descriptions, errors %s, requests: %d query, %d search, %d parse",
            reason,
            stats.get_value("wiki/descriptions", 0),
            errors or "none",
            stats.get_value("wiki/requests/query", 0),
            stats.get_value("wiki/requests/search", 0),
            stats.get_value("wiki/requests/parse", 0),
        )
        state = getattr(self, "state", None) or {}  # empty if the crawl closed before start()
        lookups = state.get("lookups", {})
        stats.set_value("wiki/open", len(lookups))
        jobdir = self.crawler.settings.get("JOBDIR")
        if reason == "shutdown":
            stats.set_value("wiki/paused", True)
            self.logger.warning(
                "paused with %d species open and %d not started; %s",
                len(lookups),
                len(self.species) - state.get("next", 0),
                (
                    f"the same command with JOBDIR={jobdir} resumes"
                    if jobdir
                    else "without a JOBDIR nothing is kept, the next run starts over"
                ),
            )
        elif reason == "finished" and lookups:
            self.logger.error(
                "%d species ended with request failures (%s); %s",
                len(lookups),
                ", ".join(list(lookups)[:10]),
                (
                    f"the same command with JOBDIR={jobdir} asks for them again"
                    if jobdir
                    else "set a JOBDIR to retry only them"
                ),
            )
