"""Test helpers: a small wiki with one page per situation the spider must handle, and runners.

The spider always runs as ``scrapy crawl`` in a subprocess from the project
folder (where ``scrapy.cfg`` is), against a :class:`StandinWiki` on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from standin import StandinWiki, WikiPage, synthetic_pages

PROJECT = Path(__file__).resolve().parents[1]
CONTACT = "tests@example.org"
# Polite defaults stay on (one request at a time per host); only the waits are made short.
FAST = {
    "AUTOTHROTTLE_ENABLED": "False",
    "DOWNLOAD_DELAY": "0.001",  # not 0: see settings.py
    "RETRY_BACKOFF_BASE": "0.05",
    "LOG_LEVEL": "INFO",
    "WIKI_CONTACT": CONTACT,
}

PLANT = ("Plantae", "Tracheophyta", "Magnoliopsida")
RANKS_PLANT = [
    ("Kingdom", "Plantae"),
    ("Clade", "Tracheophytes"),
    ("Clade", "Angiosperms"),
    ("Clade", "Eudicots"),
]

PAGES = [
    WikiPage(
        "Puma concolor",
        """{{Short description|Large cat}}
{{Speciesbox
| genus = Puma
| species = concolor
| authority = ([[Carl Linnaeus|Linnaeus]], 1771)
}}
The '''cougar''' (''Puma concolor'') is a large [[cat]].<ref>{{cite book|title=Cats}}</ref>

== Taxonomy ==
Named by Linnaeus.

== Characteristics ==
Cougars are secretive.

== Description ==
[[File:Puma.jpg|thumb|A cougar]]
The cougar has a plain '''tawny coat''' and is {{convert|1.5|-|2.4|m|ft}} long.<ref name="s">{{cite journal|title=Size}}</ref>
* Kittens are spotted.<!-- check -->
* The tail tip is dark.{{sfn|Smith|2001}}

{| class="wikitable"
| mass || 60 kg
|}

== References ==
{{reflist}}
[[Category:Felids]]
""",  # noqa: E501 (wikitext: a line break would change the page)
        [
            ("Kingdom", "Animalia"),
            ("Phylum", "Chordata"),
            ("Class", "Mammalia"),
            ("Order", "Carnivora"),
            ("Family", "Felidae"),
            ("Genus", "Puma"),
        ],
    ),
    WikiPage(
        "Ursus arctos",
        """{{Speciesbox|genus=Ursus|species=arctos}}
The '''brown bear''' is a bear.
== Characteristics ==
Omnivorous.
== Appearance ==
Brown bears have a '''shoulder hump'''.
""",
    ),
    WikiPage(
        "Cat",
        """{{Speciesbox|genus=Felis|species=catus}}
The '''cat''' is a small '''domesticated carnivore'''.

== History ==
Cats were domesticated in the Near East.
""",
    ),
    WikiPage(
        "White oak",
        """{{Speciesbox
| taxon = Quercus alba
}}
'''''Quercus alba''''', the '''white oak''', is a hardwood of North America.
== Morphology ==
The bark is '''light ash-gray''' and the leaves have rounded lobes.
""",
        [
            ("Kingdom", "Plantae"),
            ("Clade", "Tracheophytes"),
            ("Order", "Fagales"),
            ("Family", "Fagaceae"),
            ("Genus", "Quercus"),
        ],
    ),
    WikiPage(
        "Mercurius vulgaris",
        """'''Mercurius vulgaris''' may refer to:
* [[Mercurius]], a genus
{{disambiguation}}
""",
        disambiguation=True,
    ),
    WikiPage(
        "Abronia umbellata",
        """{{Speciesbox
| genus = Abronia (plant)
| species = umbellata
}}
'''''Abronia umbellata''''' is a sand-verbena of the Pacific coast.
== Description ==
A '''prostrate perennial''' with pink flower heads.
""",
        RANKS_PLANT
        + [("Order", "Caryophyllales"), ("Family", "Nyctaginaceae"), ("Genus", "Abronia")],
    ),
    WikiPage(
        "Sand verbena",
        """{{Automatic taxobox|taxon=Abronia (plant)}}
'''Abronia''' is a genus of plants; species include ''Abronia umbellata''.
""",
        RANKS_PLANT
        + [("Order", "Caryophyllales"), ("Family", "Nyctaginaceae"), ("Genus", "Abronia")],
    ),
    WikiPage(
        "Aotus gracilis",
        """'''Aotus gracilis''' may refer to:
* [[Aotus gracilis (monkey)]]
* [[Aotus gracilis (plant)]]
{{disambiguation}}
""",
        disambiguation=True,
    ),
    WikiPage(
        "Aotus gracilis (monkey)",
        """{{Taxobox
| regnum = [[Animal]]ia
| phylum = [[Chordata]]
| classis = [[Mammal]]ia
| ordo = [[Primate]]s
| familia = [[Aotidae]]
| genus = ''[[Aotus (monkey)|Aotus]]''
| species = '''''A. gracilis'''''
}}
'''''Aotus gracilis''''' is a night monkey.
== Description ==
It has '''large eyes''' for a nocturnal life.
""",
    ),
    WikiPage(
        "Aotus gracilis (plant)",
        """{{Speciesbox|genus=Aotus (plant)|species=gracilis}}
'''''Aotus gracilis''''' is a shrub.
== Description ==
It has '''yellow pea flowers'''.
""",
        RANKS_PLANT + [("Order", "Fabales"), ("Family", "Fabaceae"), ("Genus", "Aotus")],
    ),
    WikiPage(
        "Stubbia minima",
        """{{Speciesbox|genus=Stubbia|species=minima}}
{{Fabaceae-stub}}
== References ==
{{reflist}}
""",
    ),
    # a homonym's page whose rendered taxobox shows nothing above the genus (no ranks): no evidence
    WikiPage(
        "Abronia graminea",
        """{{Speciesbox|genus=Abronia|species=graminea}}
'''''Abronia graminea''''' is an arboreal alligator lizard.
== Description ==
It has '''green scales'''.
""",
    ),
    # a homonym whose two pages are found by search and arrive in one batch, both to be rendered
    WikiPage(
        "Morus minor",
        """'''Morus minor''' may refer to:
* [[Morus minor (gannet)]]
* [[Morus minor (mulberry)]]
{{disambiguation}}
""",
        disambiguation=True,
    ),
    WikiPage(
        "Morus minor (gannet)",
        """{{Speciesbox|genus=Morus|species=minor}}
'''''Morus minor''''' is a small gannet.
== Description ==
It '''plunge-dives''' for fish.
""",
        [
            ("Kingdom", "Animalia"),
            ("Phylum", "Chordata"),
            ("Class", "Aves"),
            ("Order", "Suliformes"),
            ("Family", "Sulidae"),
            ("Genus", "Morus"),
        ],
    ),
    WikiPage(
        "Morus minor (mulberry)",
        """{{Speciesbox|genus=Morus|species=minor}}
'''''Morus minor''''' is a shrub.
== Description ==
It bears '''dark purple fruit'''.
""",
        RANKS_PLANT + [("Order", "Rosales"), ("Family", "Moraceae"), ("Genus", "Morus")],
    ),
]
REDIRECTS = {"Felis catus": "Cat"}

# (binomial, kingdom, phylum, class, order, family, genus, species) -> expected outcome:
# ("description", page title, section, phrase in content) or ("error", reason)
EXPECTED = {
    (
        "Puma concolor",
        "Animalia",
        "Chordata",
        "Mammalia",
        "Carnivora",
        "Felidae",
        "Puma",
        "concolor",
    ): ("description", "Puma concolor", "Description", "tawny coat"),
    (
        "ursus arctos",
        "Animalia",
        "Chordata",
        "Mammalia",
        "Carnivora",
        "Ursidae",
        "Ursus",
        "arctos",
    ): ("description", "Ursus arctos", "Appearance", "shoulder hump"),
    ("Felis catus", "Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Felis", "catus"): (
        "description",
        "Cat",
        "lead",
        "domesticated carnivore",
    ),
    ("Quercus alba", *PLANT, "Fagales", "Fagaceae", "Quercus", "alba"): (
        "description",
        "White oak",
        "Morphology",
        "light ash-gray",
    ),
    (
        "Nonexistus imaginarius",
        "Animalia",
        "Arthropoda",
        "Insecta",
        "Diptera",
        "Muscidae",
        "Nonexistus",
        "imaginarius",
    ): ("error", "not found"),
    (
        "Mercurius vulgaris",
        "Animalia",
        "Mollusca",
        "Gastropoda",
        "Littorinimorpha",
        "Littorinidae",
        "Mercurius",
        "vulgaris",
    ): ("error", "disambiguation only"),
    ("Abronia umbellata", *PLANT, "Caryophyllales", "Nyctaginaceae", "Abronia", "umbellata"): (
        "description",
        "Abronia umbellata",
        "Description",
        "prostrate perennial",
    ),
    (
        "Abronia umbellata",
        "Animalia",
        "Chordata",
        "Reptilia",
        "Squamata",
        "Anguidae",
        "Abronia",
        "umbellata",
    ): ("error", "taxonomy mismatch"),
    (
        "Aotus gracilis",
        "Animalia",
        "Chordata",
        "Mammalia",
        "Primates",
        "Aotidae",
        "Aotus",
        "gracilis",
    ): ("description", "Aotus gracilis (monkey)", "Description", "large eyes"),
    ("Aotus gracilis", *PLANT, "Fabales", "Fabaceae", "Aotus", "gracilis"): (
        "description",
        "Aotus gracilis (plant)",
        "Description",
        "yellow pea flowers",
    ),
    ("Stubbia minima", *PLANT, "Fabales", "Fabaceae", "Stubbia", "minima"): ("error", "no content"),
    ("Abronia graminea", *PLANT, "Caryophyllales", "Nyctaginaceae", "Abronia", "graminea"): (
        "error",
        "taxonomy mismatch",
    ),
    (
        "Abronia graminea",
        "Animalia",
        "Chordata",
        "Reptilia",
        "Squamata",
        "Anguidae",
        "Abronia",
        "graminea",
    ): ("error", "taxonomy mismatch"),
    ("Morus minor", "Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "minor"): (
        "description",
        "Morus minor (gannet)",
        "Description",
        "plunge-dives",
    ),
    ("Morus minor", *PLANT, "Rosales", "Moraceae", "Morus", "minor"): (
        "description",
        "Morus minor (mulberry)",
        "Description",
        "dark purple fruit",
    ),
}
COLUMNS = ("binomial", "kingdom", "phylum", "class", "order", "family", "genus", "species")


def make_wiki(n_synthetic: int, **kwargs) -> tuple[StandinWiki, list[dict[str, str]]]:
    """The hand-made pages plus ``n_synthetic`` generated ones, and the species rows of all."""
    pages, redirects, rows = synthetic_pages(n_synthetic, seed=1)
    wiki = StandinWiki(PAGES + pages, {**REDIRECTS, **redirects}, **kwargs)
    return wiki, [dict(zip(COLUMNS, key)) for key in EXPECTED] + rows


def expected_outcomes(rows: list[dict[str, str]]) -> dict[tuple, tuple]:
    """Outcome of every input row (synthetic species are all described, by their own title)."""
    out = {}
    for row in rows:
        key = tuple(row[c] for c in COLUMNS)
        out[key] = EXPECTED.get(key) or ("description", None, "Description", "long")
    return out


def key_of(record: dict) -> tuple:
    return tuple(record[c] for c in COLUMNS)


def check_outcomes(records: list[dict], rows: list[dict[str, str]]) -> None:
    """Each input row has exactly one record, and it is the expected one."""
    expected = expected_outcomes(rows)
    keys = [key_of(r) for r in records]
    assert sorted(keys) == sorted(expected), "every (binomial, taxonomy) exactly once"
    for record in records:
        want = expected[key_of(record)]
        if want[0] == "error":
            assert record.get("reason") == want[1], (key_of(record), record)
            assert record.get("detail")
        else:
            assert "reason" not in record, (key_of(record), record)
            _, title, section, phrase = want
            assert title is None or record["title"] == title, record
            assert record["section"] == section, record
            assert phrase in record["content"], record
            for markup in ("{{", "}}", "[[", "<ref", "'''", "|", "<!--"):
                assert markup not in record["content"], (markup, record["content"])
            assert record["pageid"] and record["revid"] and record["url"].startswith("https://")
            assert record["license"] == "CC BY-SA 4.0" and record["fetched_at"]


def scrapy_command(
    species: Path,
    api_url: str,
    feed: Path,
    *extra: str,
    settings: dict | None = None,
    overwrite: bool = True,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "wikispecies",
        "-a",
        f"species={species}",
        "-a",
        f"api={api_url}",
        "-O" if overwrite else "-o",
        str(feed),
    ]
    for name, value in {**FAST, **(settings or {})}.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd + list(extra)


def run_scrapy(
    cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
