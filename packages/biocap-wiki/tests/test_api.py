"""Reading MediaWiki responses and building requests."""

from urllib.parse import parse_qs, urlparse

import pytest

from biocap_wiki.api import clean_title, query_url, read_parse, read_query, search_url


def test_clean_title_follows_the_original():
    assert clean_title("  Puma_concolor  (Linnaeus, 1771)") == "Puma concolor"
    assert clean_title("Abronia  umbellata") == "Abronia umbellata"
    assert clean_title("Foo|bar") is None and clean_title("  ") is None


def test_query_url_batches_titles_and_asks_for_everything_at_once():
    params = parse_qs(urlparse(query_url("http://h/w/api.php", ["A b", "C d"], maxlag=5)).query)
    assert (
        params["titles"] == ["A b|C d"]
        and params["maxlag"] == ["5"]
        and params["redirects"] == ["1"]
    )
    assert params["prop"] == ["info|pageprops|revisions"] and params["formatversion"] == ["2"]
    assert parse_qs(urlparse(search_url("http://h/w/api.php", "A b", 5)).query)["srsearch"] == [
        "A b"
    ]


def test_read_query_follows_normalisation_and_redirects_and_defers_continued_pages():
    payload = {
        "continue": {"rvcontinue": "3|30", "continue": "||"},
        "query": {
            "normalized": [{"from": "felis catus", "to": "Felis catus"}],
            "redirects": [{"from": "Felis catus", "to": "Cat"}],
            "pages": [
                {"ns": 0, "title": "Nope", "missing": True},
                {
                    "pageid": 2,
                    "ns": 0,
                    "title": "Cat",
                    "fullurl": "https://w/Cat",
                    "revisions": [{"revid": 20, "slots": {"main": {"content": "Cat text"}}}],
                },
                {"pageid": 3, "ns": 0, "title": "Dog"},
                {
                    "pageid": 4,
                    "ns": 0,
                    "title": "Mercury",
                    "pageprops": {"disambiguation": ""},
                    "revisions": [{"revid": 40, "slots": {"main": {"content": "may refer to"}}}],
                },
            ],
        },
    }
    pages, cont = read_query(
        payload, ["felis catus", "Nope", "Dog", "Mercury"], "2026-01-01T00:00:00+00:00"
    )
    assert cont == {"rvcontinue": "3|30", "continue": "||"}
    assert set(pages) == {
        "felis catus",
        "Nope",
        "Mercury",
    }  # Dog's content comes with the continuation
    cat = pages["felis catus"]
    assert (cat.title, cat.pageid, cat.revid, cat.wikitext, cat.url) == (
        "Cat",
        2,
        20,
        "Cat text",
        "https://w/Cat",
    )
    assert (
        pages["Nope"].missing
        and pages["Mercury"].disambiguation
        and not pages["Mercury"].is_article
    )


def test_a_parse_answer_for_another_revision_is_refused():
    answer = {
        "parse": {"title": "Abronia umbellata", "pageid": 1, "revid": 12, "text": "<table></table>"}
    }
    assert read_parse(answer, 12) == "<table></table>"
    with pytest.raises(ValueError, match="revision 12, asked for 11"):
        read_parse(answer, 11)
