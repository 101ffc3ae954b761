"""A local MediaWiki Action API stand-in, for the tests and the benchmark (test code: not in the
wheel).

It answers the three calls the spider makes with the JSON shapes English
Wikipedia returns (``formatversion=2``): batched ``action=query`` with
``normalized``, ``redirects``, ``missing`` pages, ``pageprops`` and revision
wikitext (continuing with ``rvcontinue`` past ``content_limit`` pages),
``list=search``, and ``action=parse`` of a lead whose taxobox is rendered from
the page's ``ranks`` (as an automatic taxobox is from Template:Taxonomy).
Faults (a 429 with Retry-After, a 503, a ``maxlag`` error) can be queued, an
outage answers 503 to every request it matches until it is lifted, and a
request can be held until the test releases it. Every request is logged.

Run ``python packages/biocap-wiki/tests/standin.py --synthetic 5000 --species-out s.csv``
to serve a synthetic wiki from another process (``benchmarks/wiki_throughput.py`` does).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from biocap_core.taxonomy import RANKS

_RANK_LABELS = {
    "kingdom": "Kingdom",
    "phylum": "Phylum",
    "class": "Class",
    "order": "Order",
    "family": "Family",
    "genus": "Genus",
    "species": "Species",
}


@dataclass
class WikiPage:
    """A page: wikitext, the rows its rendered taxobox shows, and whether it is a disambiguation
    page."""

    title: str
    wikitext: str
    ranks: list[tuple[str, str]] = field(
        default_factory=list
    )  # (row label, value), e.g. ("Kingdom", "Plantae")
    disambiguation: bool = False
    pageid: int = 0
    revid: int = 0


@dataclass
class Fault:
    """Answer the first request matching ``when`` with this status, headers and body, once."""

    when: Callable[[dict[str, str]], bool]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict | None = None


def maxlag_fault(when: Callable[[dict[str, str]], bool], retry_after: int = 1) -> Fault:
    """MediaWiki's maxlag refusal: HTTP 200, an error body, Retry-After and MediaWiki-API-Error."""
    return Fault(
        when,
        200,
        {"Retry-After": str(retry_after), "X-Database-Lag": "7", "MediaWiki-API-Error": "maxlag"},
        {"error": {"code": "maxlag", "info": "Waiting for db1: 7 seconds lagged.", "lag": 7}},
    )


@dataclass
class Logged:
    time: float
    params: dict[str, str]
    status: int
    user_agent: str
    headers: dict[str, str] = field(
        default_factory=dict
    )  # extra headers of the answer (Retry-After, ...)


def normalise(title: str) -> str:
    """MediaWiki title normalisation: underscores to spaces, trimmed, first letter upper-case."""
    title = " ".join(title.replace("_", " ").split())
    return title[:1].upper() + title[1:]


class StandinWiki:
    """The wiki's content and behaviour; :meth:`serve` exposes it at ``api_url``."""

    def __init__(
        self,
        pages: list[WikiPage],
        redirects: dict[str, str] | None = None,
        content_limit: int | None = None,
    ):
        self.pages: dict[str, WikiPage] = {}
        for i, page in enumerate(pages, start=1):
            page.pageid, page.revid = page.pageid or 1000 + i, page.revid or 50000 + i
            self.pages[page.title] = page
        self.by_revid = {p.revid: p for p in self.pages.values()}
        self._lowered = {
            p.title: (p.title.lower(), p.wikitext.lower()) for p in self.pages.values()
        }
        self.redirects = dict(redirects or {})
        self.content_limit = content_limit
        self.faults: list[Fault] = []
        #: while set, the requests it matches are answered 503 (the API is down)
        self.outage: Callable[[dict[str, str]], bool] | None = None
        self.log: list[Logged] = []
        self.holds: list[
            tuple[Callable[[dict[str, str]], bool], threading.Event, threading.Event]
        ] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.api_url = ""

    # --- behaviour ------------------------------------------------------------------------------

    def hold(
        self, when: Callable[[dict[str, str]], bool]
    ) -> tuple[threading.Event, threading.Event]:
        """Hold the first request matching ``when``: returns (arrived, release) events."""
        arrived, release = threading.Event(), threading.Event()
        self.holds.append((when, arrived, release))
        return arrived, release

    def answer(
        self, params: dict[str, str], user_agent: str = ""
    ) -> tuple[int, dict[str, str], dict]:
        with self._lock:
            fault = next((f for f in self.faults if f.when(params)), None)
            if fault:
                self.faults.remove(fault)
            elif self.outage is not None and self.outage(params):
                fault = Fault(self.outage, 503)
            hold = next((h for h in self.holds if h[0](params)), None)
            if hold:
                self.holds.remove(hold)
        if hold:
            hold[1].set()
            hold[2].wait(60)
        if fault:
            status, headers, body = (
                fault.status,
                fault.headers,
                fault.body or {"error": {"code": "http"}},
            )
        else:
            status, headers, body = 200, {}, self._route(params)
            if "error" in body:
                headers = {"MediaWiki-API-Error": body["error"]["code"]}
        with self._lock:
            self.log.append(Logged(time.monotonic(), params, status, user_agent, dict(headers)))
        return status, headers, body

    def _route(self, params: dict[str, str]) -> dict:
        if params.get("format") != "json" or params.get("formatversion") != "2":
            return {
                "error": {
                    "code": "badformat",
                    "info": "the spider must ask for format=json&formatversion=2",
                }
            }
        if params.get("action") == "parse":
            return self._parse(params)
        if params.get("action") == "query" and params.get("list") == "search":
            return self._search(params)
        if params.get("action") == "query" and "titles" in params:
            return self._query(params)
        return {"error": {"code": "badvalue", "info": f"unsupported request {params}"}}

    def _resolve(self, title: str) -> tuple[str, list[dict], list[dict]]:
        normalized, redirects = [], []
        final = normalise(title)
        if final != title:
            normalized.append({"fromencoded": False, "from": title, "to": final})
        if final in self.redirects:
            redirects.append({"from": final, "to": self.redirects[final]})
            final = self.redirects[final]
        return final, normalized, redirects

    def _query(self, params: dict[str, str]) -> dict:
        titles = params["titles"].split("|")
        if len(titles) > 50:
            return {
                "error": {
                    "code": "toomanyvalues",
                    "info": "Too many values supplied for parameter titles. The limit is 50.",
                }
            }
        normalized, redirects, finals = [], [], []
        for title in titles:
            final, n, r = self._resolve(title)
            normalized += [x for x in n if x not in normalized]
            redirects += [x for x in r if x not in redirects]
            if final not in finals:
                finals.append(final)
        start = int(params.get("rvcontinue", "0|0").split("|")[0])
        pages, sent, cont = [], 0, None
        for final in sorted(finals, key=lambda t: self.pages[t].pageid if t in self.pages else 0):
            page = self.pages.get(final)
            if page is None:
                pages.append({"ns": 0, "title": final, "missing": True})
                continue
            entry = {
                "pageid": page.pageid,
                "ns": 0,
                "title": page.title,
                "contentmodel": "wikitext",
                "pagelanguage": "en",
                "lastrevid": page.revid,
                "fullurl": f"https://en.wikipedia.org/wiki/{quote(page.title.replace(' ', '_'))}",
                "canonicalurl": (
                    f"https://en.wikipedia.org/wiki/{quote(page.title.replace(' ', '_'))}"
                ),
            }
            if page.disambiguation:
                entry["pageprops"] = {"disambiguation": ""}
            if page.pageid >= start and cont is None:
                if self.content_limit is not None and sent >= self.content_limit:
                    cont = {"rvcontinue": f"{page.pageid}|{page.revid}", "continue": "||"}
                else:
                    sent += 1
                    entry["revisions"] = [
                        {
                            "revid": page.revid,
                            "parentid": page.revid - 1,
                            "slots": {
                                "main": {
                                    "contentmodel": "wikitext",
                                    "contentformat": "text/x-wiki",
                                    "content": page.wikitext,
                                }
                            },
                        }
                    ]
            pages.append(entry)
        query = {"pages": pages}
        if normalized:
            query["normalized"] = normalized
        if redirects:
            query["redirects"] = redirects
        return (
            {"continue": cont, "query": query} if cont else {"batchcomplete": True, "query": query}
        )

    def _search(self, params: dict[str, str]) -> dict:
        needle = params["srsearch"].lower()
        limit = int(params.get("srlimit", "10"))
        in_title = [p for p in self.pages.values() if needle in self._lowered[p.title][0]]
        in_text = [
            p
            for p in self.pages.values()
            if needle in self._lowered[p.title][1] and needle not in self._lowered[p.title][0]
        ]
        hits = (in_title + in_text)[:limit]
        return {
            "batchcomplete": True,
            "query": {
                "searchinfo": {"totalhits": len(in_title) + len(in_text)},
                "search": [{"ns": 0, "title": p.title, "pageid": p.pageid} for p in hits],
            },
        }

    def _parse(self, params: dict[str, str]) -> dict:
        page = self.by_revid.get(int(params.get("oldid", "0")))
        if page is None:
            return {
                "error": {
                    "code": "nosuchrevid",
                    "info": f"There is no revision with ID {params.get('oldid')}.",
                }
            }
        rows = "".join(
            f'<tr><td>{label}:</td><td><a href="/wiki/{quote(value)}">{value}</a></td></tr>'
            for label, value in page.ranks
        )
        table = (
            f'<table class="infobox biota"><tbody><tr><th colspan="2">{page.title}</th></tr>{rows}'
            "</tbody></table>"
            if page.ranks
            else ""
        )
        html = (
            '<div class="mw-content-ltr mw-parser-output" lang="en"'
            f' dir="ltr">{table}<p>Lead.</p></div>'
        )
        return {
            "parse": {"title": page.title, "pageid": page.pageid, "revid": page.revid, "text": html}
        }

    # --- HTTP
    # --------------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> StandinWiki:
        wiki = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per response and no Nagle delay, or keep-alive requests stall ~40 ms each.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/w/api.php":
                    self.send_error(404)
                    return
                params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                status, headers, body = wiki.answer(params, self.headers.get("User-Agent", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.api_url = f"http://{host}:{self._server.server_address[1]}/w/api.php"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        for _, _, release in self.holds:
            release.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> StandinWiki:
        return self if self._server else self.serve()

    def __exit__(self, *exc) -> None:
        self.close()


# --- a synthetic wiki for the benchmark -----------------------------------------------------------

_KINGDOMS = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Fringillidae"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae"),
    ("Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Amanitaceae"),
]
_WORDS = (
    "dorsal ventral striped mottled glossy pale dark slender robust ovate lanceolate serrate "
    "crimson olive tawny ochre violet hairy smooth ridged spotted banded"
).split()


def synthetic_pages(
    n: int, seed: int = 0
) -> tuple[list[WikiPage], dict[str, str], list[dict[str, str]]]:
    """``n`` species pages shaped like real ones, their redirects, and their species list rows.

    90% resolve by title, 5% through a redirect, 5% only through search (their
    page has a common-name title); each page has a Speciesbox, a lead, a
    Description section with references and templates, and other sections.
    """
    rng = random.Random(seed)
    pages, redirects, rows = [], {}, []
    for i in range(n):
        kingdom, phylum, klass, order, family = _KINGDOMS[i % len(_KINGDOMS)]
        genus, epithet = f"Genus{i // 7:05d}", f"epithet{i:06d}"
        binomial = f"{genus} {epithet}"
        rows.append(
            dict(
                zip(
                    ("binomial",) + RANKS,
                    (binomial, kingdom, phylum, klass, order, family, genus, epithet),
                )
            )
        )

        def words(k: int) -> str:
            return " ".join(rng.choice(_WORDS) for _ in range(k))

        wikitext = (
            f"{{{{Short description|Species of {family}}}}}\n"
            f"{{{{Speciesbox\n| genus = {genus}\n| species = {epithet}\n| authority = Author,"
            " 1900\n}}\n"
            f"'''''{binomial}''''' is a species in the family [[{family}]].<ref>{{{{cite"
            " web|title=x}}</ref> "
            f"{words(40)}.\n\n== Taxonomy ==\n{words(60)}.\n\n"
            f"== Description ==\nIt is {{{{convert|{i % 90 + 3}|cm|in}}}} long, {words(80)}."
            f'<ref name="a{i}">{{{{cite journal|title={words(5)}}}}}</ref>\n'
            f"* {words(12)}\n* {words(12)}\n\n"
            f"== Distribution ==\n{words(60)}.\n\n== References ==\n{{{{reflist}}}}\n"
            f"[[Category:{family}]]\n"
        )
        ranks = list(
            zip(
                ("Kingdom", "Phylum", "Class", "Order", "Family", "Genus"),
                (kingdom, phylum, klass, order, family, genus),
            )
        )
        if i % 20 == 19:  # findable only by search, under a common name
            title = f"Common {epithet}"
        else:
            title = binomial
            if i % 20 == 18:
                title = f"{binomial} (species)"
                redirects[binomial] = title
        pages.append(WikiPage(title, wikitext, ranks))
    return pages, redirects, rows


def synthetic_wiki(n: int, seed: int = 0) -> tuple[StandinWiki, list[dict[str, str]]]:
    """A stand-in serving :func:`synthetic_pages`, and the species list rows."""
    pages, redirects, rows = synthetic_pages(n, seed)
    return StandinWiki(pages, redirects), rows


def write_species(rows: list[dict[str, str]], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=("binomial",) + RANKS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, required=True, help="number of species pages")
    parser.add_argument("--species-out", required=True, help="where to write their species CSV")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    wiki, rows = synthetic_wiki(args.synthetic, args.seed)
    write_species(rows, args.species_out)
    wiki.serve(port=args.port)
    print(wiki.api_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
