"""The toy evaluation sets, each in the layout of the real benchmark it stands in for.

Zero-shot classification (camera-trap, meta-album and rare-species CSVs), text-image retrieval,
INQUIRE-Rerank, Wikipedia descriptions and caption format examples: written in the real files'
columns so the eval and caption code under test reads them exactly as it reads the originals.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import polars as pl

from biocap_core import schemas
from biocap_core.taxonomy import RANKS
from biocap_core.toy.render import ToyImage
from biocap_core.toy.species import MARK_WORDS, ToySpecies

SUPERCATEGORIES = ("Appearance", "Behavior", "Context", "Species")


def _save_images(items: list[ToyImage], root: Path, name) -> list[str]:
    paths = []
    for im in items:
        rel = name(im)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(im.jpeg)
        paths.append(rel)
    return paths


def write_classification(items: list[ToyImage], root: Path) -> None:
    """Zero-shot sets in the original's three layouts, sharing one image folder."""
    paths = _save_images(
        items,
        root,
        lambda im: f"images/{im.species.taxon.genus}_{im.species.taxon.species}/{im.uuid}.jpg",
    )
    ranks = [{r: im.species.taxon.rank(r) for r in RANKS} for im in items]
    # camera-trap layout: lower-case ranks in `cls`, common name, filepath, uuid; no index, no class
    # column
    pl.DataFrame(
        {
            "scientific_name": [im.species.scientific for im in items],
            "common_name": [im.species.taxon.common_name for im in items],
            **{("cls" if r == "class" else r): [row[r].lower() for row in ranks] for r in RANKS},
            "filepath": paths,
            "uuid": [im.uuid for im in items],
        }
    ).write_csv(root / "camera_trap.csv")
    # meta-album / NABirds layout: unnamed index, filepath, class (scientific name, used as is)
    pl.DataFrame(
        {"": range(len(items)), "filepath": paths, "class": [im.species.scientific for im in items]}
    ).write_csv(root / "metadata.csv")
    # rare-species layout: unnamed index, capitalised ranks in `cls`, common_name, filepath, class
    pl.DataFrame(
        {
            "": range(len(items)),
            **{("cls" if r == "class" else r): [row[r] for row in ranks] for r in RANKS},
            "common_name": [im.species.taxon.common_name for im in items],
            "filepath": paths,
            "class": [im.species.scientific for im in items],
        }
    ).write_csv(root / "rare_species.csv")


def write_retrieval(items: list[ToyImage], captions: list[str], root: Path) -> None:
    """Image-caption pairs in the retrieval CSV layout (numeric ids, one caption per image)."""
    ids = {im.uuid: str(100000 + i) for i, im in enumerate(items)}
    _save_images(items, root, lambda im: f"images/{ids[im.uuid]}.jpg")
    pl.DataFrame(
        {
            "": range(len(items)),
            "id": list(ids.values()),
            "source_url": [f"toy://retrieval/{i}.jpg" for i in ids.values()],
            "captions": captions,
            "md5": [hashlib.md5(im.jpeg).hexdigest() for im in items],
        }
    ).write_csv(root / "toy_retrieval.csv")


#: What an INQUIRE-style query can ask of an image, by the names its predicate uses.
_ATTRIBUTES = {
    "stage": lambda im: im.stage,
    "plan": lambda im: im.species.plan,
    "colour": lambda im: im.species.colour,
    "pattern": lambda im: im.species.pattern,
    "tilt": lambda im: im.tilt,
    "background": lambda im: im.background,
    "name": lambda im: im.species.taxon.common_name or im.species.scientific,  # may be shared
}


def _query(supercategory: str, im: ToyImage, staged: bool) -> tuple[str, dict[str, object]]:
    """A query that ``im`` answers, and the attributes an image must share with ``im`` to be
    relevant; ``staged`` queries name the life stage too (``a juvenile red sprout on a dark
    background``)."""
    sp = im.species
    stage = f"{im.stage} " if staged else ""
    if supercategory == "Appearance":
        if staged:
            text, keys = f"{stage}{sp.colour} {sp.plan}", ("colour", "plan")
        else:
            text, keys = f"{sp.colour} organism with a {sp.pattern} pattern", ("colour", "pattern")
    elif supercategory == "Behavior":
        text, keys = f"{stage}{sp.plan} {im.tilt}", ("plan", "tilt")
    elif supercategory == "Context":
        if staged:
            text = f"{stage}{sp.colour} {sp.plan} on a {im.background} background"
            keys = ("colour", "plan", "background")
        else:
            text = f"{sp.colour} organism on a {im.background} background"
            keys = ("colour", "background")
    else:
        name = sp.taxon.common_name or sp.scientific
        if staged and sp.taxon.common_name:  # "a juvenile two-marked striped red crawler"
            name = name[0].lower() + name[1:]
        text, keys = f"{stage}{name}", ("name",)
    if staged:
        keys = ("stage",) + keys
    if supercategory != "Species" or staged:
        text = ("an " if text[0] in "aeiou" else "a ") + text
    return text, {key: _ATTRIBUTES[key](im) for key in keys}


def _queries(pool: list[ToyImage], rng: random.Random, n_queries: int):
    """Queries about traits, life stage, pose and setting, each built from a pool image so it has a
    positive, in turn over INQUIRE's supercategories; in each, one query in three is about juveniles
    and one about adults. The predicate decides relevance from the image's true attributes."""
    juveniles = [im for im in pool if im.stage == "juvenile"] or pool
    adults = [im for im in pool if im.stage == "adult"] or pool
    queries, seen, tries = [], set(), 0
    while len(queries) < n_queries and tries < 100 * n_queries:
        tries += 1
        supercategory = SUPERCATEGORIES[len(queries) % len(SUPERCATEGORIES)]
        turn = len(queries) // len(SUPERCATEGORIES) % 3  # 0: any image, 1: a juvenile, 2: an adult
        image = rng.choice((pool, juveniles, adults)[turn])
        text, wanted = _query(supercategory, image, staged=turn > 0)
        if text not in seen:
            seen.add(text)
            queries.append(
                (
                    text,
                    supercategory,
                    lambda o, wanted=wanted: all(_ATTRIBUTES[k](o) == v for k, v in wanted.items()),
                )
            )
    return queries


def write_inquire(
    pool: list[ToyImage], root: Path, n_queries: int, n_candidates: int, seed: int
) -> None:
    """INQUIRE-Rerank: queries and, per query, up to ``n_candidates`` pool images marked relevant or
    not."""
    rng = random.Random(f"{seed}/inquire")
    _save_images(pool, root, lambda im: f"images/{im.uuid}.jpg")
    image_ids = {im.uuid: 5_000_000 + i for i, im in enumerate(pool)}
    queries, rows = [], []
    for qid, (text, supercategory, predicate) in enumerate(_queries(pool, rng, n_queries), start=1):
        positives = [im for im in pool if predicate(im)]
        negatives = [im for im in pool if not predicate(im)]
        n_pos = min(len(positives), max(1, int(n_candidates * rng.uniform(0.05, 0.3))))
        chosen = rng.sample(positives, n_pos) + rng.sample(
            negatives, min(len(negatives), n_candidates - n_pos)
        )
        rng.shuffle(chosen)
        queries.append(
            {
                "query_id": qid,
                "query_text": text,
                "supercategory": supercategory,
                "category": f"toy {supercategory.lower()}",
                "iconic_group": "Toy",
            }
        )
        rows += [
            {
                "query": text,
                "filepath": f"images/{im.uuid}.jpg",
                "relevant": int(predicate(im)),
                "inat24_image_id": image_ids[im.uuid],
                "supercategory": supercategory,
            }
            for im in chosen
        ]
    schemas.INQUIRE_QUERIES.frame(queries).write_csv(root / "queries.csv")
    schemas.INQUIRE_RERANK.frame(rows).write_parquet(root / "rerank.parquet")


def write_wiki(species: list[ToySpecies], root: Path) -> None:
    """A species list and one Wikipedia-style description per species, describing its traits."""
    rows, species_rows = [], []
    for sp in species:
        t = sp.taxon
        ranks = {r: t.rank(r) for r in RANKS}
        content = (
            f"{sp.scientific} is a {sp.plan} of the family {t.family}, order {t.order}.\n"
            f"Description. Adults have a {sp.shape}, {sp.colour} body"
            + (
                f" with a {sp.pattern_colour} rim"
                if sp.pattern == "plain"
                else f" covered in a {sp.pattern_colour} {sp.pattern} pattern"
            )
            + f". A row of {MARK_WORDS[sp.marks - 1]} {sp.mark_colour}"
            + f" mark{'s' if sp.marks > 1 else ''} sits"
            " above the body. Juveniles are smaller and paler than adults and grow their marks"
            f" as they mature. It is found in toy habitats across the {t.kingdom} collection."
        )
        binomial = sp.scientific
        species_rows.append({"binomial": binomial, **ranks})
        rows.append(
            {
                "binomial": binomial,
                **ranks,
                "content": content,
                "title": binomial,
                "pageid": 1000 + sp.index,
                "revid": 9000 + sp.index,
                "url": f"https://en.wikipedia.org/?curid={1000 + sp.index}",
                "section": "Description",
                "fetched_at": None,
                "license": "CC BY-SA 4.0",
            }
        )
    frame = schemas.WIKI_DESCRIPTIONS.frame(rows).with_columns(
        pl.lit("2026-01-01T00:00:00Z").str.to_datetime(time_zone="UTC").alias("fetched_at")
    )
    frame.write_parquet(root / "wiki_descriptions.parquet")
    schemas.SPECIES_LIST.frame(species_rows).write_csv(root / "species.csv")


def write_format_examples(species: list[ToySpecies], root: Path) -> None:
    """Caption format examples per class, in the table the caption prompt reads them from."""
    by_class: dict[str, list[ToySpecies]] = {}
    for sp in species:
        by_class.setdefault(sp.taxon.klass, []).append(sp)
    rows = [
        {
            "class": klass,
            "description": "\n\n".join(
                f"{i}. The {sp.taxon.common_name or sp.scientific}, {sp.scientific}, displays a"
                f" {sp.shape} {sp.colour} body with {sp.pattern} markings."
                for i, sp in enumerate(members[:3], start=1)
            ),
        }
        for klass, members in by_class.items()
    ]
    schemas.FORMAT_EXAMPLES.frame(rows).write_parquet(root / "format_examples.parquet")
