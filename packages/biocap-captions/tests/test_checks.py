"""Caption cleaning and flags."""

from __future__ import annotations

import pytest

from biocap_captions.checks import check_caption, clean_caption, names_species


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("The fly agaric has a red cap.", "The fly agaric has a red cap."),
        ("  The fly agaric\nhas a red cap.  ", "The fly agaric has a red cap."),
        (
            "The fly agaric has a red cap.<|im_end|><|im_start|>user\nmore",
            "The fly agaric has a red cap.",
        ),
        ("The fly agaric has a red cap.</s>", "The fly agaric has a red cap."),
        ('**Caption:** "The fly agaric has a red cap."', "The fly agaric has a red cap."),
        ("1. The fly agaric has a <b>red</b> cap.", "The fly agaric has a red cap."),
        ("<|im_start|>assistant\nThe fly agaric has a red cap.", "The fly agaric has a red cap."),
        ("<|im_end|>", ""),
    ],
)
def test_clean_caption(raw, clean):
    assert clean_caption(raw)[0] == clean


def test_clean_caption_reports_whether_markup_was_removed():
    assert clean_caption("  plain text \n")[1] is False
    assert clean_caption("**bold** text")[1] is True


def test_names_species_ignores_case_punctuation_and_partial_words():
    assert names_species("The House Sparrow's bill is stout.", "House sparrow")
    assert names_species(
        "Passer  domesticus, with a grey crown.", "House sparrow", "Passer domesticus"
    )
    assert not names_species("A sparrowhawk perches.", "sparrow")
    assert not names_species("A bird perches.", "", "House sparrow")


def test_check_caption_flags():
    good = check_caption(
        "The house sparrow has a stout bill.", "stop", "House sparrow", "Passer domesticus", 20
    )
    assert (good.word_count, good.names_species, good.flags) == (7, True, "")
    long = " ".join(["word"] * 25)
    bad = check_caption(f"**{long}", "length", "House sparrow", "Passer domesticus", 20)
    assert bad.word_count == 25 and not bad.names_species
    assert bad.flags == "truncated,over_word_limit,no_species_name,markup_removed"
