"""Taxobox ranks and the homonym check.

A binomial can name two organisms (*Abronia umbellata* is a lizard and a
plant), so a candidate page is accepted for an expected taxonomy only if the
ranks its taxobox shows agree with it. Ranks come from the wikitext when a
manual ``{{Taxobox}}`` lists them, and otherwise from the rendered taxobox
(``action=parse``): automatic taxoboxes (``{{Speciesbox}}`` and kin) name
only the genus in wikitext and resolve the higher ranks when rendered.

The comparison is the original's (``wiki_scraper/scraper_ambiguous_names.py``): kingdom to genus,
only ranks present on both sides, each equal after lower-casing and
whitespace collapsing, or equal after "soft" normalisation (letters only,
one common suffix stripped if at least four letters remain).
"""

from __future__ import annotations

from collections.abc import Mapping

from mwparserfromhell.wikicode import Wikicode
from parsel import Selector

from biocap_core.taxonomy import RANKS
from biocap_wiki.extract import parse, template_name

#: Ranks compared by the homonym check (species is not: taxoboxes abbreviate it).
COMPARED_RANKS: tuple[str, ...] = RANKS[:-1]
_HIGHER_RANKS = COMPARED_RANKS[:-1]
_SUFFIXES = (
    "phytes",
    "phyte",
    "phyta",
    "opsida",
    "idae",
    "inae",
    "oidea",
    "aceae",
    "ales",
    "ina",
    "eae",
    "ae",
    "es",
    "us",
    "a",
    "e",
    "s",
)
# Manual {{Taxobox}} parameters (Latin) and their rank.
_TAXOBOX_PARAMS = {
    "regnum": "kingdom",
    "phylum": "phylum",
    "divisio": "phylum",
    "classis": "class",
    "ordo": "order",
    "familia": "family",
    "genus": "genus",
    "species": "species",
}
_SPECIESBOXES = {"speciesbox", "subspeciesbox", "infraspeciesbox", "hybridbox"}
# Row labels of a rendered taxobox. Matched exactly, unlike the original's
# "label contains", which also let "Subfamily:" or "Superorder:" overwrite a rank.
_ROW_LABELS = {
    "kingdom": "kingdom",
    "phylum": "phylum",
    "division": "phylum",
    "class": "class",
    "order": "order",
    "family": "family",
    "genus": "genus",
    "species": "species",
}


def _name(value: str) -> str:
    """A rank value as a single name: the first word, without extinction daggers or quotes."""
    words = value.replace("†", " ").replace('"', " ").replace("'", " ").split()
    return words[0] if words else ""


def wikitext_ranks(wikitext: str | Wikicode) -> dict[str, str]:
    """Ranks named in the wikitext's taxobox: all of them for a manual ``{{Taxobox}}``,
    genus (and species) for ``{{Speciesbox}}`` and kin, nothing otherwise."""
    code = parse(wikitext) if isinstance(wikitext, str) else wikitext
    for template in code.filter_templates(recursive=False):
        name = template_name(template)
        params = {
            str(p.name).strip().lower(): p.value.strip_code().strip() for p in template.params
        }
        if name == "taxobox":
            ranks = {}
            for param, rank in _TAXOBOX_PARAMS.items():
                if params.get(param) and rank not in ranks:
                    ranks[rank] = _name(params[param])
            if "species" in ranks:  # the manual taxobox writes "A. umbellata"
                ranks["species"] = params["species"].replace("'", " ").split()[-1]
            return {r: v for r, v in ranks.items() if v}
        if name in _SPECIESBOXES:
            genus, species = params.get("genus", ""), params.get("species", "")
            if not genus and params.get("taxon"):
                parts = params["taxon"].split()
                genus, species = parts[0], parts[-1] if len(parts) > 1 else ""
            return {r: v for r, v in (("genus", _name(genus)), ("species", _name(species))) if v}
    return {}


def rendered_ranks(html: str) -> dict[str, str]:
    """Ranks shown in a rendered taxobox (the ``table.infobox`` rows "Kingdom:", ...)."""
    selector = Selector(text=html)
    rows = selector.css("table.infobox tr") or selector.css("table tr")
    ranks: dict[str, str] = {}
    for row in rows:
        cells = row.xpath("./td|./th")
        if len(cells) < 2:
            continue
        label = (
            " ".join(" ".join(cells[0].css("::text").getall()).split()).lower().rstrip(":").strip()
        )
        rank = _ROW_LABELS.get(label)
        if rank and rank not in ranks:
            words = " ".join(cells[1].css("::text").getall()).replace("†", " ").split()
            if words:  # the species row reads "A. umbellata": keep the epithet
                ranks[rank] = words[-1] if rank == "species" else _name(words[0])
    return ranks


def has_higher_ranks(ranks: Mapping[str, str]) -> bool:
    """Whether ``ranks`` name anything above the genus (enough to tell homonyms apart)."""
    return any(ranks.get(r) for r in _HIGHER_RANKS)


def soft_name(name: str) -> str:
    """The original's soft form: letters only, lower-case, one common suffix stripped
    if at least four letters remain ("Tracheophyta" and "Tracheophytes" both give "tracheo")."""
    letters = "".join(ch for ch in name.lower() if ch.isalpha())
    for suffix in _SUFFIXES:
        if letters.endswith(suffix) and len(letters) - len(suffix) >= 4:
            return letters[: -len(suffix)]
    return letters


def same_name(expected: str, found: str) -> bool:
    """Exact (case- and whitespace-insensitive) or soft match of two rank values."""
    a, b = " ".join(expected.lower().split()), " ".join(found.lower().split())
    return a == b or soft_name(a) == soft_name(b)


def ranks_agree(expected: Mapping[str, str], found: Mapping[str, str]) -> bool | None:
    """Compare kingdom to genus where both sides name the rank.

    ``False`` if a shared rank differs; ``True`` if every shared rank matches
    and one of them is above the genus; ``None`` otherwise (no evidence either
    way). The genus alone is no evidence: it is the first word of the binomial,
    so every homonym of a name shares it (the plant and the lizard *Abronia
    umbellata* both have "Abronia" in their taxobox).
    """
    evidence = False
    for rank in COMPARED_RANKS:
        a, b = (expected.get(rank) or "").strip(), (found.get(rank) or "").strip()
        if a and b:
            if not same_name(a, b):
                return False
            evidence = evidence or rank in _HIGHER_RANKS
    return True if evidence else None
