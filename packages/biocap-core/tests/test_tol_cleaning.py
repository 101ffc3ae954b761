"""TreeOfLife-10M texts on messy taxonomy strings: BioCLIP's cleaning, then its shard writer, byte
for byte.

The oracle below is an independent restatement of BioCLIP's code (Imageomics/bioclip at
80ee3e36): ``clean_rank``, ``strip_html``, ``clean_name`` and ``Taxon`` from
``src/imageomics/naming.py``, and ``make_txt`` from ``scripts/evobio10m/make_wds.py``. It keeps
the original's shape (a mutable taxon cleaned in ``__post_init__``) so that it can be read
side by side with the source; the property test checks our texts against it on generated
messy rank strings, and the worked examples pin each rule (and check the oracle as well).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biocap_core.errors import EmptyTaxonError
from biocap_core.taxonomy import Taxon, label_text, tol_names, tol_texts


# ---- oracle: a restatement of imageomics/naming.py and evobio10m/make_wds.py ----
def _bioclip_strip_html(string):
    def clean(s):
        return re.sub(r"<.*?>(.*?)</.*?>", r"\1", s)

    while string != clean(string):
        string = clean(string)
    return string


def _bioclip_clean_rank(value):
    value = _bioclip_strip_html(value).lower()
    if value in ("(unidentified)", "unknown", "pleasehelp"):
        value = ""
    return value


def _bioclip_clean_name(name):
    name = _bioclip_strip_html(name.lower()).strip()
    patterns = [
        r"\(",
        r"ssp\.",
        r"subsp\.",
        r"var\.",
        r"\w+, \w+ & \w+",
        r"\w+ & \w+",
        r"\w+ \d\d\d\d",
        r"\w+, \d\d\d\d",
        r"\d\d\d\d",
        r" [A-z]\.",
        r"<br ?>",
    ]
    for pattern in patterns:
        match = re.search(pattern, name)
        if match:
            start, end = match.span()
            name = name[:start].strip()
    return name


_ORACLE_RANKS = ("kingdom", "phylum", "cls", "order", "family", "genus", "species")


@dataclasses.dataclass
class _BioclipTaxon:
    kingdom: str
    phylum: str
    cls: str
    order: str
    family: str
    genus: str
    species: str

    def __post_init__(self):
        for rank in _ORACLE_RANKS:
            setattr(self, rank, _bioclip_clean_rank(getattr(self, rank)))
        self.species = _bioclip_clean_name(self.species)
        if self.kingdom == "metazoa":
            self.kingdom = "animalia"
        if self.kingdom == "archaeplastida":
            self.kingdom = "plantae"
        if self.kingdom == "chloroplastida":
            self.kingdom = "plantae"
        if self.species:
            maybe_genus, *rest = self.species.split()
            if maybe_genus == self.genus and rest:
                self.species = " ".join(rest)
            if not self.genus and maybe_genus and rest:
                self.species = " ".join(rest)
                self.genus = maybe_genus
            if len(self.species.split()) == 2:
                first, second = self.species.split()
                if first == second:
                    self.species = first
        for rank in _ORACLE_RANKS:
            setattr(self, rank, _bioclip_clean_rank(getattr(self, rank)))

    @property
    def empty(self):
        return not any(getattr(self, rank) for rank in _ORACLE_RANKS)

    @property
    def taxonomic(self):
        name = " ".join(
            [getattr(self, r).capitalize() for r in _ORACLE_RANKS[:6]] + [self.species.lower()]
        ).strip()
        return " ".join(name.split())

    @property
    def scientific(self):
        name = " ".join([self.genus.capitalize(), self.species.lower()]).strip()
        return " ".join(name.split()).capitalize()

    @property
    def tagged(self):
        pairs = [
            (tag, getattr(self, r).capitalize())
            for tag, r in zip(
                ("kingdom", "phylum", "class", "order", "family", "genus"), _ORACLE_RANKS
            )
        ]
        return [(k, v) for k, v in pairs + [("species", self.species.lower())] if v]


def _bioclip_make_txt(taxon, common):
    """make_txt, with its ``assert not taxon.empty`` turned into a None return."""
    if taxon.empty:
        return None
    if not common:
        common = taxon.scientific
    if not common:
        common = taxon.taxonomic
    tagged = " ".join(f"{tier} {value}" for tier, value in taxon.tagged)
    return {
        "scientific_name.txt": taxon.scientific,
        "taxonomic_name.txt": taxon.taxonomic,
        "common_name.txt": common,
        "sci.txt": f"a photo of {taxon.scientific}.",
        "com.txt": f"a photo of {common}.",
        "taxon.txt": f"a photo of {taxon.taxonomic}.",
        "taxonTag.txt": f"a photo of {tagged}.",
        "sci_com.txt": f"a photo of {taxon.scientific} with common name {common}.",
        "taxon_com.txt": f"a photo of {taxon.taxonomic} with common name {common}.",
        "taxonTag_com.txt": f"a photo of {tagged} with common name {common}.",
    }


# ---- end of the oracle ----


def _ours(ranks, common=""):
    taxon = Taxon(*ranks, common_name=common)
    return {f"{k}.txt": v for k, v in {**tol_names(taxon), **tol_texts(taxon)}.items()}


def _mixed_case(text: str):
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper))
    )


_FRAGMENTS = st.one_of(
    # a few names, often repeated, so that genus and species values collide
    st.sampled_from(["leo", "panthera", "felis", "x"]).flatmap(_mixed_case),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéßİ_", min_size=1, max_size=8
    ),
    st.sampled_from(
        ["unknown", "(unidentified)", "pleasehelp", "metazoa", "archaeplastida", "chloroplastida"]
    ).flatmap(_mixed_case),
    st.sampled_from(
        [
            "<i>",
            "</i>",
            "<b>x</b>",
            "<br>",
            "<br >",
            "<br/>",
            "(",
            ")",
            "ssp.",
            "subsp.",
            "var.",
            "sp.",
            "&",
            ",",
            "L.",
            "r.br.",
            "_.",
            "[.",
            ".",
            "1758",
            "12",
        ]
    ),
)
_SEPARATORS = st.sampled_from(["", " ", "  ", ", ", "\t"])


@st.composite
def _messy_rank(draw) -> str:
    if draw(st.integers(0, 5)) == 0:
        return ""
    parts = draw(st.lists(st.tuples(_FRAGMENTS, _SEPARATORS), min_size=1, max_size=5))
    return "".join(f + s for f, s in parts)


@st.composite
def _messy_taxa(draw):
    ranks = [draw(_messy_rank()) for _ in range(7)]
    if draw(st.booleans()):  # a species value that starts with (some casing of) the genus
        ranks[6] = draw(_mixed_case(ranks[5])) + draw(_SEPARATORS) + ranks[6]
    common = draw(st.one_of(st.just(""), st.just(" "), _messy_rank()))
    return ranks, common


@settings(max_examples=400)
@given(_messy_taxa())
def test_tol_texts_and_names_are_bioclips_on_messy_ranks(raw):
    ranks, common = raw
    expected = _bioclip_make_txt(_BioclipTaxon(*ranks), common)
    if expected is None:
        with pytest.raises(EmptyTaxonError, match="no rank is left"):
            tol_texts(Taxon(*ranks, common_name=common))
        with pytest.raises(EmptyTaxonError):
            tol_names(Taxon(*ranks, common_name=common))
    else:
        assert _ours(ranks, common) == expected


@settings(max_examples=400)
@given(_messy_taxa())
def test_cleaned_ranks_are_bioclips(raw):
    ranks, _ = raw
    oracle = _BioclipTaxon(*ranks)
    assert Taxon(*ranks).cleaned.ranks() == tuple(getattr(oracle, r) for r in _ORACLE_RANKS)


# (what the example shows, kingdom ... species, expected taxonomic name, expected scientific name)
WORKED_EXAMPLES = [
    (
        "ranks are lower-cased, then capitalised; the epithet stays lower-case",
        ("ANIMALIA", "CHORDATA", "MAMMALIA", "CARNIVORA", "FELIDAE", "PANTHERA", "LEO"),
        "Animalia Chordata Mammalia Carnivora Felidae Panthera leo",
        "Panthera leo",
    ),
    (
        "placeholders become empty, in any case",
        ("Animalia", "Unknown", "(Unidentified)", "PleaseHelp", "Felidae", "Panthera", "UNKNOWN"),
        "Animalia Felidae Panthera",
        "Panthera",
    ),
    (
        "a padded placeholder is not one (the original compares without stripping)",
        (" unknown", "Chordata", "", "", "", "", ""),
        "unknown Chordata",
        "",
    ),
    ("Metazoa is Animalia", ("Metazoa", "Chordata", "", "", "", "", ""), "Animalia Chordata", ""),
    (
        "Archaeplastida is Plantae",
        ("Archaeplastida", "", "", "", "", "Rosa", ""),
        "Plantae Rosa",
        "Rosa",
    ),
    ("Chloroplastida is Plantae", ("CHLOROPLASTIDA", "", "", "", "", "", ""), "Plantae", ""),
    (
        "paired HTML tags are removed, nested ones too",
        ("", "", "", "", "", "<i>Panthera</i>", "<b><i>leo</i></b>"),
        "Panthera leo",
        "Panthera leo",
    ),
    (
        "the epithet ends at a parenthesis",
        ("", "", "", "", "", "Panthera", "leo (Linnaeus, 1758)"),
        "Panthera leo",
        "Panthera leo",
    ),
    (
        "... at ssp.",
        ("", "", "", "", "", "Panthera", "leo ssp. persica"),
        "Panthera leo",
        "Panthera leo",
    ),
    (
        "... at subsp.",
        ("", "", "", "", "", "Lagocheirus", "araneiformis subsp. parvulus"),
        "Lagocheirus araneiformis",
        "Lagocheirus araneiformis",
    ),
    (
        "... at var.",
        ("", "", "", "", "", "Echinocereus", "rigidissimus var. rubrispinus"),
        "Echinocereus rigidissimus",
        "Echinocereus rigidissimus",
    ),
    (
        "... at a word followed by a year",
        ("", "", "", "", "", "Megacyllene", "asteca Chevrolat 1860"),
        "Megacyllene asteca",
        "Megacyllene asteca",
    ),
    (
        "... at 'name, year'",
        ("", "", "", "", "", "Partula", "subangulata Pease, 1870"),
        "Partula subangulata",
        "Partula subangulata",
    ),
    (
        "... at 'x & y'",
        ("", "", "", "", "", "Agosia", "yarrowi Jordan & Evermann"),
        "Agosia yarrowi",
        "Agosia yarrowi",
    ),
    (
        "... at a single-letter initial",
        ("", "", "", "", "", "Morinda", "citrifolia L."),
        "Morinda citrifolia",
        "Morinda citrifolia",
    ),
    (
        "... at a line break",
        ("", "", "", "", "", "Pellaea", "boivinii <br > var. boivinii"),
        "Pellaea boivinii",
        "Pellaea boivinii",
    ),
    (
        "a cut at the very start leaves no epithet",
        ("", "", "", "", "Felidae", "Panthera", "(Linnaeus)"),
        "Felidae Panthera",
        "Panthera",
    ),
    (
        "... and so does a bare author and year",
        ("", "", "", "", "", "Panthera", "Linnaeus 1758"),
        "Panthera",
        "Panthera",
    ),
    ("sp. is kept", ("", "", "", "", "", "Panthera", "sp."), "Panthera sp.", "Panthera sp."),
    (
        "a species that repeats the genus loses it",
        ("", "", "", "", "", "Panthera", "Panthera leo"),
        "Panthera leo",
        "Panthera leo",
    ),
    (
        "a two-word species supplies a missing genus",
        ("Animalia", "", "", "", "", "", "Panthera leo"),
        "Animalia Panthera leo",
        "Panthera leo",
    ),
    (
        "a doubled epithet becomes one",
        ("", "", "", "", "", "Panthera", "leo leo"),
        "Panthera leo",
        "Panthera leo",
    ),
    (
        "... also after the genus is taken out",
        ("", "", "", "", "", "", "geospiza fuliginosa fuliginosa"),
        "Geospiza fuliginosa",
        "Geospiza fuliginosa",
    ),
    (
        "a trinomial keeps three words",
        ("", "", "", "", "", "", "Panthera leo persica"),
        "Panthera leo persica",
        "Panthera leo persica",
    ),
    (
        "a species naming another genus is kept whole",
        ("", "", "", "", "", "Panthera", "Felis leo"),
        "Panthera felis leo",
        "Panthera felis leo",
    ),
]


@pytest.mark.parametrize(
    "what,ranks,taxonomic,scientific", WORKED_EXAMPLES, ids=[w[0] for w in WORKED_EXAMPLES]
)
def test_worked_examples_of_bioclips_cleaning(what, ranks, taxonomic, scientific):
    texts = _ours(ranks)
    assert (texts["taxonomic_name.txt"], texts["scientific_name.txt"]) == (taxonomic, scientific)
    assert texts["taxon.txt"] == f"a photo of {taxonomic}."
    assert texts == _bioclip_make_txt(_BioclipTaxon(*ranks), "")


def test_the_tags_follow_the_cleaned_ranks():
    texts = _ours(
        ("Metazoa", "unknown", "", "", "", "<i>Panthera</i>", "Panthera leo (Linnaeus, 1758)"),
        "Lion",
    )
    assert (
        texts["taxonTag_com.txt"]
        == "a photo of kingdom Animalia genus Panthera species leo with common name Lion."
    )


@pytest.mark.parametrize(
    "ranks",
    [
        ("Unknown", "(unidentified)", "", "", "", "", ""),
        ("", "", "", "", "", "", "(Linnaeus 1758)"),
        ("<i>pleasehelp</i>", "", "", "", "", "", "1758"),
    ],
)
def test_a_taxon_with_nothing_left_is_refused_not_written_as_a_photo_of_nothing(ranks):
    taxon = Taxon(*ranks, common_name="Lion")
    with pytest.raises(EmptyTaxonError, match="no rank is left after BioCLIP's cleaning"):
        tol_texts(taxon)
    with pytest.raises(EmptyTaxonError):
        tol_names(taxon)


def test_eval_labels_are_not_cleaned_because_naming_eval_does_not_clean():
    row = Taxon("Metazoa", "", "", "", "", "panthera", "Leo (Linnaeus, 1758)", "Lion")
    assert (
        label_text(row, "taxon_com")
        == "Metazoa     Panthera leo (linnaeus, 1758) with common name Lion"
    )
