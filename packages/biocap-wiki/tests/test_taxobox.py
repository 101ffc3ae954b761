"""Taxobox ranks and the original's exact-or-soft homonym comparison."""

from biocap_wiki.taxobox import ranks_agree, rendered_ranks, same_name, soft_name, wikitext_ranks

LIZARD = {
    "kingdom": "Animalia",
    "phylum": "Chordata",
    "class": "Reptilia",
    "order": "Squamata",
    "family": "Anguidae",
    "genus": "Abronia",
    "species": "umbellata",
}
PLANT = {
    "kingdom": "Plantae",
    "phylum": "Tracheophyta",
    "class": "Magnoliopsida",
    "order": "Caryophyllales",
    "family": "Nyctaginaceae",
    "genus": "Abronia",
    "species": "umbellata",
}


def test_soft_names_strip_one_suffix_keeping_four_letters():
    assert soft_name("Tracheophyta") == soft_name("Tracheophytes") == "tracheo"
    assert soft_name("Pinopsida") == "pinopsid"  # "-opsida" would leave 3 letters, so "-a" goes
    assert soft_name("Rosa") == "rosa"  # stripping "-a" would leave 3 letters
    assert same_name("Actinopterygii ", "actinopterygii")
    assert not same_name("Reptilia", "Mammalia")


def test_ranks_agree_compares_only_shared_ranks_kingdom_to_genus():
    rendered = {
        "kingdom": "Plantae",
        "order": "Caryophyllales",
        "family": "Nyctaginaceae",
        "genus": "Abronia",
    }
    assert ranks_agree(PLANT, rendered) is True
    assert ranks_agree(LIZARD, rendered) is False
    assert ranks_agree(PLANT, {"species": "umbellata"}) is None  # species is not compared
    assert ranks_agree(PLANT, {"phylum": "Tracheophytes"}) is True  # soft match
    assert (
        ranks_agree({**PLANT, "family": ""}, {"family": "Fabaceae", "order": "Caryophyllales"})
        is True
    )


def test_the_genus_alone_is_no_evidence_but_a_different_genus_is():
    # every homonym shares the genus: it is the first word of the binomial
    assert ranks_agree(LIZARD, {"genus": "Abronia", "species": "umbellata"}) is None
    assert ranks_agree({**PLANT, "family": ""}, {"family": "Fabaceae", "genus": "Abronia"}) is None
    assert ranks_agree(LIZARD, {"genus": "Quercus"}) is False


def test_wikitext_ranks_of_manual_and_automatic_taxoboxes():
    manual = (
        "{{Taxobox\n| regnum = [[Plant]]ae\n| divisio = [[Magnoliophyta]]\n| classis ="
        " [[Liliopsida]]\n| ordo = [[Poales]]\n| familia = [[Poaceae]]\n| genus = ''[[Tridens"
        " (plant)|Tridens]]''\n| species = '''''T. flavus'''''\n}}\nText."
    )
    assert wikitext_ranks(manual) == {
        "kingdom": "Plantae",
        "phylum": "Magnoliophyta",
        "class": "Liliopsida",
        "order": "Poales",
        "family": "Poaceae",
        "genus": "Tridens",
        "species": "flavus",
    }
    assert wikitext_ranks("{{Speciesbox|genus=Abronia (plant)|species=umbellata}}") == {
        "genus": "Abronia",
        "species": "umbellata",
    }
    assert wikitext_ranks("{{speciesbox | taxon = Puma concolor}}") == {
        "genus": "Puma",
        "species": "concolor",
    }
    assert wikitext_ranks("{{Automatic taxobox|taxon=Abronia}}\nNo ranks.") == {}


def test_rendered_ranks_match_row_labels_exactly():
    html = (
        '<table class="infobox biota"><tr><th colspan="2">Abronia umbellata</th></tr>'
        "<tr><td>Kingdom:</td><td><a>Plantae</a></td></tr>"
        "<tr><td>Clade:</td><td>Tracheophytes</td></tr>"
        "<tr><td>Superorder:</td><td>Caryophyllanae</td></tr>"
        "<tr><td>Order:</td><td>Caryophyllales</td></tr>"
        "<tr><td>Family:</td><td>Nyctaginaceae</td></tr>"
        "<tr><td>Subfamily:</td><td>Nyctaginoideae</td></tr>"
        "<tr><td>Division:</td><td>† Magnoliophyta</td></tr>"
        "<tr><td>Species:</td><td><b><i>A. umbellata</i></b></td></tr></table>"
    )
    assert rendered_ranks(html) == {
        "kingdom": "Plantae",
        "order": "Caryophyllales",
        "family": "Nyctaginaceae",
        "phylum": "Magnoliophyta",
        "species": "umbellata",
    }
