"""`scrapy crawl wikispecies` against the stand-in: every species' outcome, batching and
politeness."""

from __future__ import annotations

import math
from collections import Counter

from standin import Fault, maxlag_fault
from wikitest import CONTACT, check_outcomes, make_wiki, read_jsonl, run_scrapy, scrapy_command


def is_search(p):
    return p.get("list") == "search"


def is_parse(p):
    return p.get("action") == "parse"


def is_title_query(p):
    return "titles" in p


def test_every_species_gets_its_outcome_despite_429_503_maxlag_and_continuation(
    tmp_path, species_csv
):
    wiki, rows = make_wiki(
        120, content_limit=30
    )  # >50 titles per batch, and continuation past 30 pages
    wiki.faults = [
        Fault(is_search, 429, {"Retry-After": "1"}, {"error": {"code": "http"}}),
        Fault(is_parse, 503, {}, {"error": {"code": "http"}}),
        maxlag_fault(is_title_query, retry_after=1),
    ]
    feed = tmp_path / "out.jsonl"
    with wiki:  # no HTTP cache: the log must show every request the spider makes
        result = run_scrapy(
            scrapy_command(
                species_csv(rows), wiki.api_url, feed, settings={"HTTPCACHE_ENABLED": "False"}
            )
        )
    check_outcomes(read_jsonl(feed), rows)

    log = wiki.log
    assert not wiki.faults, "every fault was served"
    # politeness: every request carries maxlag, the JSON format and a User-Agent with the contact
    assert all(e.params.get("maxlag") == "5" and e.params.get("formatversion") == "2" for e in log)
    assert all(CONTACT in e.user_agent and e.user_agent.startswith("biocap-wiki/") for e in log)
    # Retry-After is honoured for the whole host: nothing is sent for 1 s after a 429 or a maxlag
    # refusal
    waits = [i for i, e in enumerate(log) if "Retry-After" in e.headers]
    assert len(waits) == 2
    for i in waits:
        assert log[i + 1].time - log[i].time >= 0.9, (log[i].params, log[i + 1].params)
    # the 503 was retried after a short backoff and its species still got an answer
    assert [e.status for e in log if is_parse(e.params)][0] == 503
    assert "429 Too Many Requests" in result.stderr and "Unknown Status" not in result.stderr
    # each revision is rendered once, also when two candidates of a homonym (Morus minor) arrive in
    # one batch
    rendered = Counter(e.params["oldid"] for e in log if is_parse(e.params) and e.status == 200)
    assert max(rendered.values()) == 1, [oldid for oldid, n in rendered.items() if n > 1]
    # batching: at most 50 titles per query, and few queries for 129 binomials
    queries = [e.params for e in log if is_title_query(e.params)]
    assert max(len(q["titles"].split("|")) for q in queries) <= 50
    assert any("rvcontinue" in q for q in queries)
    first_pages = [q for q in queries if "rvcontinue" not in q]
    assert (
        len(first_pages) <= math.ceil(129 / 50) + 2 + 1
    )  # start batches, follow-up batches, the maxlag retry


def test_http_cache_replays_a_finished_crawl_without_requests(tmp_path, species_csv):
    wiki, rows = make_wiki(10)
    user_cache = {
        "XDG_CACHE_HOME": str(tmp_path / "xdg")
    }  # the default cache lives there, not in the checkout
    with wiki:
        species = species_csv(rows)
        run_scrapy(scrapy_command(species, wiki.api_url, tmp_path / "a.jsonl"), env=user_cache)
        sent = len(wiki.log)
        run_scrapy(scrapy_command(species, wiki.api_url, tmp_path / "b.jsonl"), env=user_cache)
    assert len(wiki.log) == sent, "the second crawl is served from the cache"
    assert any((tmp_path / "xdg" / "biocap-wiki" / "httpcache").iterdir())

    def strip(recs):
        return sorted((r["binomial"], r.get("content") or "", r.get("reason") or "") for r in recs)

    assert strip(read_jsonl(tmp_path / "a.jsonl")) == strip(read_jsonl(tmp_path / "b.jsonl"))
