"""Choosing and cleaning the description text of an article."""

from biocap_wiki.extract import LEAD, describe, plain_text


def test_keyword_priority_beats_document_order():
    text = (
        "Lead.\n== Characteristics ==\nC text.\n== Identification ==\nI text.\n== Morphology ==\nM"
        " text.\n"
    )
    assert describe(text).section == "Morphology"
    assert describe(text).text == "M text."


def test_heading_match_is_case_insensitive_substring_at_any_level():
    text = "Lead.\n== Biology ==\n=== Physical DESCRIPTION ===\nThe shell is ribbed.\n"
    extract = describe(text)
    assert (extract.section, extract.text) == ("Physical DESCRIPTION", "The shell is ribbed.")


def test_section_stops_at_next_heading_and_empty_sections_are_skipped():
    text = (
        "Lead text.\n== Description ==\n{{Main|Other}}\n== Appearance ==\nGreen.\n"
        "=== Juveniles ===\nGrey.\n"
    )
    extract = describe(text)
    assert extract.section == "Appearance"
    assert extract.text == "Green."  # the subsection is not part of it


def test_lead_fallback_and_none_without_text():
    assert (
        describe("{{Speciesbox|genus=A}}\nA '''plant'''.\n== Range ==\nEurope.\n").section == LEAD
    )
    assert describe("{{Speciesbox|genus=A}}\n{{stub}}\n== References ==\n{{reflist}}\n") is None


def test_markup_references_files_tables_and_templates_are_stripped():
    text = plain_text(
        "[[File:X.jpg|thumb|A [[caption]]]]\nIts '''bill''' is [[red (colour)|red]]<ref>{{cite"
        " web|t=x}}</ref> and {{convert|12|-|15|cm|in}} long,{{sfn|A|2001}} see [http://example.org"
        ' the key].<!-- note -->\ncontinued line.\n\n{| class="wikitable"\n| a || b\n|}\n* one'
        " {{lang|la|unus}}\n* two\n; term : definition\n[[Category:Birds]]\n[[de:Vogel]]\n"
    )
    assert text.splitlines() == [
        "Its bill is red and 12–15 cm long, see the key. continued line.",
        "one unus",
        "two",
        "term definition",
    ]
