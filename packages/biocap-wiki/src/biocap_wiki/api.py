"""MediaWiki Action API requests and responses (``format=json``, ``formatversion=2``).

Only three calls are used: ``action=query`` with up to 50 ``titles`` per
request (redirects resolved, page props for disambiguation, latest revision
wikitext and canonical URL, all in one response), ``list=search`` for names
that do not resolve, and ``action=parse`` of the lead section for the ranks of
an automatic taxobox, which only rendering reveals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

DEFAULT_API = "https://en.wikipedia.org/w/api.php"
#: Characters MediaWiki does not allow in titles; "|" would also split a batch.
ILLEGAL_TITLE_CHARS = frozenset("#<>[]|{}")
_COMMON = {"format": "json", "formatversion": "2"}


class ApiError(RuntimeError):
    """The API answered with an ``error`` object (bad parameters, maxlag after all retries, ...)."""

    def __init__(self, code: str, info: str):
        super().__init__(f"MediaWiki API error {code}: {info}")
        self.code = code


@dataclass
class Page:
    """One page as the batched query returned it (``missing`` pages have no pageid)."""

    title: str
    pageid: int | None = None
    revid: int | None = None
    url: str | None = None
    wikitext: str | None = None
    disambiguation: bool = False
    missing: bool = False
    fetched_at: str | None = None

    @property
    def is_article(self) -> bool:
        return not self.missing and not self.disambiguation


def clean_title(binomial: str) -> str | None:
    """The original's name cleaning: underscores to spaces, a trailing parenthetical
    (author, year) dropped, whitespace collapsed. ``None`` if no valid title remains."""
    name = binomial.replace("_", " ").strip()
    if name.endswith(")") and "(" in name:
        name = name[: name.rindex("(")]
    name = " ".join(name.split())
    if not name or ILLEGAL_TITLE_CHARS.intersection(name):
        return None
    return name


def _url(api: str, params: Mapping[str, str | int], maxlag: int | None) -> str:
    merged = {**params, **_COMMON}
    if maxlag is not None:
        merged["maxlag"] = str(maxlag)
    return f"{api}?{urlencode(merged)}"


def query_url(
    api: str,
    titles: Iterable[str],
    maxlag: int | None = None,
    cont: Mapping[str, str] | None = None,
) -> str:
    """One batched ``action=query`` for up to 50 titles: redirects, disambiguation flag,
    canonical URL and the latest revision's wikitext."""
    params = {
        "action": "query",
        "prop": "info|pageprops|revisions",
        "inprop": "url",
        "ppprop": "disambiguation",
        "rvprop": "ids|content",
        "rvslots": "main",
        "redirects": "1",
        "titles": "|".join(titles),
        **(cont or {}),
    }
    return _url(api, params, maxlag)


def search_url(api: str, query: str, limit: int, maxlag: int | None = None) -> str:
    """``list=search`` in the article namespace, titles only."""
    params = {
        "action": "query",
        "list": "search",
        "srsearch": query,
        "srlimit": str(limit),
        "srnamespace": "0",
        "srprop": "",
        "srinfo": "",
    }
    return _url(api, params, maxlag)


def parse_url(api: str, revid: int, maxlag: int | None = None) -> str:
    """``action=parse`` of one revision's lead section (where the taxobox lives)."""
    params = {
        "action": "parse",
        "oldid": str(revid),
        "prop": "text",
        "section": "0",
        "disableeditsection": "1",
        "disablelimitreport": "1",
    }
    return _url(api, params, maxlag)


def check(payload: Mapping) -> Mapping:
    """Raise :class:`ApiError` if the payload is an API error; return it otherwise."""
    error = payload.get("error")
    if error:
        raise ApiError(str(error.get("code", "unknown")), str(error.get("info", "")))
    return payload


def response_time(date_header: bytes | str | None) -> str:
    """ISO time the server produced a response (its ``Date`` header, so a cached
    response keeps its original fetch time), or now when the header is absent."""
    if date_header:
        try:
            text = date_header.decode() if isinstance(date_header, bytes) else date_header
            return parsedate_to_datetime(text).astimezone(UTC).isoformat()
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC).isoformat()


def read_query(
    payload: Mapping, requested: Iterable[str], fetched_at: str | None = None
) -> tuple[dict[str, Page], dict[str, str] | None]:
    """Map each requested title to its page, following ``normalized`` and ``redirects``.

    Returns the pages that are complete in this response and the ``continue``
    parameters, if any. When a batch's content exceeds the API's result size,
    the API leaves ``revisions`` out of some pages and sets ``continue``; those
    titles are left out here and arrive with the continuation.
    """
    query = check(payload).get("query", {})
    cont = payload.get("continue")
    normalized = {n["from"]: n["to"] for n in query.get("normalized", [])}
    redirects = {r["from"]: r["to"] for r in query.get("redirects", [])}
    by_title = {p["title"]: p for p in query.get("pages", [])}
    out: dict[str, Page] = {}
    for title in requested:
        final = normalized.get(title, title)
        seen = {final}
        while final in redirects and redirects[final] not in seen:
            final = redirects[final]
            seen.add(final)
        raw = by_title.get(final)
        if raw is None or raw.get("missing") or raw.get("invalid"):
            out[title] = Page(title=final, missing=True, fetched_at=fetched_at)
            continue
        revisions = raw.get("revisions")
        if not revisions and cont:
            continue  # content comes with the continuation
        revision = revisions[0] if revisions else {}
        out[title] = Page(
            title=raw["title"],
            pageid=raw.get("pageid"),
            revid=revision.get("revid"),
            url=raw.get("canonicalurl") or raw.get("fullurl"),
            wikitext=(
                revision.get("slots", {}).get("main", {}).get("content") if revision else None
            ),
            disambiguation="disambiguation" in (raw.get("pageprops") or {}),
            fetched_at=fetched_at,
        )
    return out, cont


def read_search(payload: Mapping) -> list[str]:
    """Titles of ``list=search`` hits, best first."""
    return [hit["title"] for hit in check(payload).get("query", {}).get("search", [])]


def read_parse(payload: Mapping, revid: int) -> str:
    """Rendered HTML of an ``action=parse`` response for revision ``revid``.

    The ranks read from it decide which taxonomy a page describes, so an answer
    for another revision (a stale cache, a proxy, an API change) is refused
    rather than trusted.
    """
    parsed = check(payload).get("parse", {})
    if parsed.get("revid") != revid:
        raise ValueError(
            f"action=parse answered for revision {parsed.get('revid')}, asked for {revid}"
        )
    text = parsed.get("text", "")
    return text if isinstance(text, str) else text.get("*", "")
