"""The per-binomial resolution logic, driven by hand (no HTTP)."""

from biocap_wiki.api import Page
from biocap_wiki.resolve import (
    DISAMBIGUATION_ONLY,
    NO_CONTENT,
    NOT_FOUND,
    TAXONOMY_MISMATCH,
    Failed,
    Fetch,
    Found,
    Lookup,
    Render,
    Search,
)

PLANT = (
    "Plantae",
    "Tracheophyta",
    "Magnoliopsida",
    "Caryophyllales",
    "Nyctaginaceae",
    "Abronia",
    "umbellata",
)
LIZARD = ("Animalia", "Chordata", "Reptilia", "Squamata", "Anguidae", "Abronia", "umbellata")
ARTICLE = (
    "{{Speciesbox|genus=Abronia|species=umbellata}}\nLead.\n== Description ==\nPink flowers.\n"
)
RENDERED_PLANT = {
    "kingdom": "Plantae",
    "order": "Caryophyllales",
    "family": "Nyctaginaceae",
    "genus": "Abronia",
}


def page(title, wikitext=ARTICLE, **kw):
    return Page(
        title=title,
        pageid=kw.pop("pageid", 1),
        revid=kw.pop("revid", 11),
        url="https://x/" + title,
        wikitext=wikitext,
        **kw,
    )


def test_unique_name_resolved_by_title_needs_one_fetch_and_no_render():
    lookup = Lookup.new("Abronia umbellata", [PLANT])
    assert lookup.start() == [Fetch(("Abronia umbellata",))]
    actions = lookup.on_page("Abronia umbellata", page("Abronia umbellata"))
    assert [type(a) for a in actions] == [Found]
    assert actions[0].extract.text == "Pink flowers." and lookup.done


def test_unique_name_rejected_when_the_wikitext_taxobox_disagrees():
    manual = "{{Taxobox|regnum=Animalia|genus=Abronia}}\nA lizard.\n"
    lookup = Lookup.new("Abronia umbellata", [PLANT])
    lookup.start()
    assert lookup.on_page("Abronia umbellata", page("Abronia umbellata", manual)) == [
        Search("Abronia umbellata")
    ]
    [failed] = lookup.on_search("Abronia umbellata", ["Abronia umbellata"])
    assert failed.reason == TAXONOMY_MISMATCH and "kingdom=Animalia" in failed.detail


def test_homonym_each_taxonomy_gets_its_own_matching_page_or_a_mismatch():
    lookup = Lookup.new("Abronia umbellata", [PLANT, LIZARD])
    lookup.start()
    # ambiguous: the automatic taxobox only names the genus, so the page is rendered first
    assert lookup.on_page("Abronia umbellata", page("Abronia umbellata")) == [
        Render("Abronia umbellata", 11)
    ]
    actions = lookup.on_render("Abronia umbellata", RENDERED_PLANT)
    assert isinstance(actions[0], Found) and actions[0].taxon == PLANT
    assert actions[1:] == [Search("Abronia umbellata")]
    assert lookup.on_search("Abronia umbellata", ["Sand verbena", "Abronia umbellata"]) == [
        Fetch(("Sand verbena",))
    ]
    assert lookup.on_page("Sand verbena", page("Sand verbena", revid=12)) == [
        Render("Sand verbena", 12)
    ]
    [failed] = lookup.on_render("Sand verbena", RENDERED_PLANT)
    assert failed == Failed(LIZARD, TAXONOMY_MISMATCH, failed.detail) and lookup.done
    assert "Sand verbena" in failed.detail


def test_homonym_page_without_ranks_beyond_the_genus_is_a_mismatch_for_every_taxonomy():
    # the rendered taxobox shows nothing (e.g. a broken Template:Taxonomy): only the genus, which
    # both share
    lookup = Lookup.new("Abronia umbellata", [PLANT, LIZARD])
    lookup.start()
    assert lookup.on_page("Abronia umbellata", page("Abronia umbellata")) == [
        Render("Abronia umbellata", 11)
    ]
    assert lookup.on_render("Abronia umbellata", {}) == [Search("Abronia umbellata")]
    failed = lookup.on_search("Abronia umbellata", ["Abronia umbellata"])
    assert [(f.taxon, f.reason) for f in failed] == [
        (PLANT, TAXONOMY_MISMATCH),
        (LIZARD, TAXONOMY_MISMATCH),
    ]
    assert "Abronia umbellata (genus=Abronia" in failed[0].detail


def test_candidates_arriving_in_one_batch_render_a_page_once():
    lookup = Lookup.new("Abronia umbellata", [PLANT, LIZARD])
    lookup.start()
    lookup.on_page("Abronia umbellata", Page("Abronia umbellata", missing=True))
    assert lookup.on_search("Abronia umbellata", ["Sand verbena", "Abronia (lizard)"]) == [
        Fetch(("Sand verbena", "Abronia (lizard)"))
    ]
    actions = lookup.on_page("Sand verbena", page("Sand verbena", revid=12)) + lookup.on_page(
        "Abronia (lizard)", page("Abronia (lizard)", revid=13)
    )
    assert actions == [Render("Sand verbena", 12)]
    assert lookup.resend() == [Render("Sand verbena", 12)]


def test_disambiguation_only_not_found_and_no_content():
    lookup = Lookup.new("Mercurius vulgaris", [PLANT])
    lookup.start()
    assert lookup.on_page(
        "Mercurius vulgaris",
        Page("Mercurius vulgaris", 5, 6, disambiguation=True, wikitext="may refer to"),
    ) == [Search("Mercurius vulgaris")]
    assert [(f.reason) for f in lookup.on_search("Mercurius vulgaris", ["Mercurius vulgaris"])] == [
        DISAMBIGUATION_ONLY
    ]

    lookup = Lookup.new("Nonexistus imaginarius", [PLANT])
    lookup.start()
    lookup.on_page("Nonexistus imaginarius", Page("Nonexistus imaginarius", missing=True))
    assert [f.reason for f in lookup.on_search("Nonexistus imaginarius", [])] == [NOT_FOUND]

    lookup = Lookup.new("Abronia umbellata", [PLANT])
    lookup.start()
    [failed] = lookup.on_page(
        "Abronia umbellata", page("Abronia umbellata", "{{Speciesbox|genus=Abronia}}\n{{stub}}")
    )
    assert failed.reason == NO_CONTENT


def test_search_hits_are_checked_and_exact_titles_come_first():
    lookup = Lookup.new("Abronia umbellata", [PLANT])
    lookup.start()
    lookup.on_page("Abronia umbellata", Page("Abronia umbellata", missing=True))
    assert lookup.on_search("Abronia umbellata", ["Sand verbena", "Coastal plants"]) == [
        Fetch(("Sand verbena", "Coastal plants"))
    ]
    # a search hit is verified like a homonym, with the rendered taxobox
    assert (
        lookup.on_page("Coastal plants", page("Coastal plants", "Plants of the coast.", revid=20))
        == []
    )
    assert lookup.on_page("Sand verbena", page("Sand verbena", revid=12)) == [
        Render("Sand verbena", 12)
    ]
    [found] = lookup.on_render("Sand verbena", RENDERED_PLANT)
    assert found.page.title == "Sand verbena"


def test_duplicate_answers_are_ignored_and_resend_repeats_what_is_awaited():
    lookup = Lookup.new("Abronia umbellata", [PLANT, LIZARD])
    lookup.start()
    assert lookup.resend() == [Fetch(("Abronia umbellata",))]
    lookup.on_page("Abronia umbellata", page("Abronia umbellata"))
    assert lookup.on_page("Abronia umbellata", page("Abronia umbellata")) == []
    assert lookup.resend() == [Render("Abronia umbellata", 11)]


def test_a_request_failure_is_reported_but_the_lookup_stays_open_to_ask_again():
    lookup = Lookup.new("Abronia umbellata", [PLANT, LIZARD])
    lookup.start()
    lookup.on_page("Abronia umbellata", page("Abronia umbellata"))
    failed = lookup.fail("HTTP 503")
    assert [f.reason for f in failed] == ["request failed"] * 2
    assert not lookup.done and lookup.resend() == [Render("Abronia umbellata", 11)]
    [found] = lookup.on_render("Abronia umbellata", RENDERED_PLANT)[:1]
    assert found.taxon == PLANT
