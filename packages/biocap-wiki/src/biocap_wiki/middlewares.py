"""Retry with backoff that honours Retry-After, and an HTTP cache policy that skips API errors.

Scrapy's RetryMiddleware re-queues a failed request at once and ignores
``Retry-After``. MediaWiki asks clients to wait: a 429 or 503 carries
``Retry-After``, and a ``maxlag`` refusal is an HTTP 200 whose JSON error is
flagged by the ``MediaWiki-API-Error`` header, also with ``Retry-After``.
:class:`RetryAfterMiddleware` keeps RetryMiddleware's counting, stats and
give-up logging and adds the wait: it pauses the host's download slot for the
Retry-After time (or an exponential backoff when there is none), so no request
to that host leaves before then, not only the retried one. A failed
connection before any response came is not retried: the host is unreachable
(down, offline, a wrong URL), and minutes of backoff would only delay saying so.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from time import monotonic

from scrapy import signals
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import CannotResolveHostError, DownloadConnectionRefusedError
from scrapy.extensions.httpcache import DummyPolicy
from scrapy.http import Request, Response
from scrapy.utils.asyncio import call_later
from scrapy.utils.response import response_status_message
from twisted.internet.error import ConnectError

from biocap_core.retry_after import retry_after_seconds

logger = logging.getLogger(__name__)
API_ERROR_HEADER = b"MediaWiki-API-Error"
#: Failures that mean no connection to the host at all: Scrapy's wrappers of Twisted's
#: "connection refused" and DNS errors, and the Twisted errors it passes on (connect timeout, no
#: route).
CONNECT_ERRORS = (DownloadConnectionRefusedError, CannotResolveHostError, ConnectError)


def status_message(status: int) -> str:
    """``"429 Too Many Requests"``: Scrapy's ``response_status_message`` reads Twisted's
    table, which lacks 429 and prints "429 Unknown Status" for the status that matters most here."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return response_status_message(status)


class RetryAfterMiddleware(RetryMiddleware):
    """RetryMiddleware plus a wait before each retry, and retries of MediaWiki ``maxlag`` answers.

    The wait starts from the ``response_downloaded`` signal, which Scrapy sends
    before the download slot sends its next request (AutoThrottle uses it for
    the same reason); ``process_response`` comes too late for that.

    Settings: ``RETRY_BACKOFF_BASE`` (seconds before the first retry without
    Retry-After; doubled each retry), ``RETRY_BACKOFF_MAX`` (cap of that
    backoff), ``RETRY_AFTER_MAX`` (cap of a server's Retry-After) and
    ``RETRY_API_ERROR_CODES`` (API error codes worth retrying).
    """

    def __init__(self, settings):
        super().__init__(settings)
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX", 60.0)
        self.retry_after_max = settings.getfloat("RETRY_AFTER_MAX", 300.0)
        self.api_error_codes = set(
            settings.getlist("RETRY_API_ERROR_CODES", ["maxlag", "ratelimited"])
        )
        self._held_until: dict[str, float] = {}

    @classmethod
    def from_crawler(cls, crawler):
        middleware = super().from_crawler(crawler)
        crawler.signals.connect(middleware.response_downloaded, signal=signals.response_downloaded)
        return middleware

    def _retry_reason(self, request: Request, response: Response) -> str | None:
        if request.meta.get("dont_retry", False):
            return None
        api_error = response.headers.get(API_ERROR_HEADER, b"").decode()
        if api_error in self.api_error_codes:
            return f"API error {api_error}"
        if response.status in self.retry_http_codes:
            return status_message(response.status)
        return None

    def response_downloaded(self, response: Response, request: Request, spider=None) -> None:
        reason = self._retry_reason(request, response)
        if reason and request.meta.get("retry_times", 0) < request.meta.get(
            "max_retry_times", self.max_retry_times
        ):
            self._wait(request, reason, retry_after_seconds(response.headers.get(b"Retry-After")))

    def process_response(
        self, request: Request, response: Response, spider=None
    ) -> Request | Response:
        reason = self._retry_reason(request, response)
        if reason is None:
            return response
        return self._retry(request, reason) or response

    def process_exception(self, request: Request, exception: Exception, spider=None):
        if isinstance(exception, CONNECT_ERRORS) and not self.crawler.stats.get_value(
            "response_received_count"
        ):
            return None  # unreachable from the start: the spider's errback says so (and stops)
        retry = super().process_exception(request, exception)
        if isinstance(retry, Request):
            self._wait(request, type(exception).__name__, None)
        return retry

    def _wait(self, request: Request, reason: str, retry_after: float | None) -> None:
        attempt = request.meta.get("retry_times", 0)
        if retry_after is not None:
            seconds, source = min(retry_after, self.retry_after_max), "Retry-After"
        else:
            seconds, source = min(self.backoff_base * 2**attempt, self.backoff_max), "backoff"
        logger.info(
            "%s for %s: waiting %.2f s (%s) before retry %d",
            reason,
            request.url[:120],
            seconds,
            source,
            attempt + 1,
        )
        self.crawler.stats.inc_value(f"retry/wait/{source}")
        self._hold_slot(request, seconds)

    def _hold_slot(self, request: Request, seconds: float) -> None:
        """Keep the request's download slot from sending anything for ``seconds``.

        Scrapy has no public call for this; we use the slot's ``latercall``, the
        same hook its DOWNLOAD_DELAY uses to block a slot until a timer fires.
        """
        if seconds <= 0:
            return
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        slot = downloader.slots.get(key)
        until = monotonic() + seconds
        if slot is None or until <= self._held_until.get(key, 0.0):
            return
        self._held_until[key] = until
        if slot.latercall:
            slot.latercall.cancel()
        slot.latercall = call_later(seconds, downloader._latercall, slot)


class ApiCachePolicy(DummyPolicy):
    """Cache every answer except those worth retrying.

    DummyPolicy already skips ``HTTPCACHE_IGNORE_HTTP_CODES`` (429, 5xx); API
    errors such as ``maxlag`` come as HTTP 200 and must not be replayed from
    the cache either.
    """

    def should_cache_response(self, response: Response, request: Request) -> bool:
        return (
            super().should_cache_response(response, request)
            and API_ERROR_HEADER not in response.headers
        )
