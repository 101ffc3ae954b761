"""The toy tree of life: a small procedural dataset in the real TreeOfLife-10M layout.

Every visible trait follows the taxonomy, so a model can learn it and a
caption of traits is true of its image:

========  ==========================  ================================
rank      trait                       example
========  ==========================  ================================
kingdom   body plan                   crawler (legged body), sprout (stem + leaves), cap (mushroom)
class     body colour                 red, blue ...
order     body shape                  round, long, tall, square
family    pattern                     plain, striped, spotted, checked
genus     pattern colour              white, black ...
species   number of marks             1-4 marks
========  ==========================  ================================

Position, size, tilt and background vary per image. Everything is seeded: the
same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import polars as pl
import webdataset as wds
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from biocap_core import schemas
from biocap_core.fileio import atomic_write
from biocap_core.taxonomy import RANKS, Taxon, tol_names, tol_texts

PLANS = ("crawler", "sprout", "cap")
COLOURS = {  # name -> RGB
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "yellow": (225, 200, 40),
    "purple": (130, 50, 170),
    "orange": (235, 130, 30),
    "pink": (230, 120, 170),
    "teal": (30, 150, 150),
}
SHAPES = ("round", "long", "tall", "square")
PATTERNS = ("plain", "striped", "spotted", "checked")
PATTERN_COLOURS = {"white": (245, 245, 245), "black": (20, 20, 20), "grey": (128, 128, 128), "brown": (110, 70, 30)}
MARK_WORDS = ("one", "two", "three", "four")
BACKGROUNDS = {"pale": (215, 210, 195), "dark": (60, 62, 58)}
TILTS = ("upright", "leaning left", "leaning right")
SUPERCATEGORIES = ("Appearance", "Behavior", "Context", "Species")

#: A tiny OpenCLIP CLIP config (2-layer towers of width 64, 32 px images) for tests and
#: examples on the toy data: random init, CPU speed.
TINY_MODEL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_RANK_SUFFIX = {
    "kingdom": ("ia", "ae"),
    "phylum": ("ota", "phyta"),
    "class": ("ida", "opsida"),
    "order": ("ales", "iformes"),
    "family": ("idae", "aceae"),
    "genus": ("us", "a", "ia", "ella"),
    "species": ("ensis", "ata", "us", "ii", "ica"),
}
_SYLLABLES = ("ba", "ce", "di", "fo", "gu", "ka", "le", "mi", "no", "pu", "ra", "se", "ti", "vo", "xa", "zo",
              "bri", "cla", "dro", "fla", "gri", "pla", "stro", "tha")
# Each rank's branching grows in this order until the tree has enough leaves.
_GROWTH_ORDER = ("kingdom", "class", "species", "order", "family", "genus", "phylum")
_RANK_LIMIT = {"kingdom": len(PLANS), "class": len(COLOURS), "order": len(SHAPES), "family": len(PATTERNS),
               "genus": len(PATTERN_COLOURS), "species": len(MARK_WORDS), "phylum": 4}


@dataclass(frozen=True)
class ToySpecies:
    """A toy species: its taxon and the traits its ranks give it."""

    index: int
    taxon: Taxon
    plan: str
    colour: str
    shape: str
    pattern: str
    pattern_colour: str
    marks: int

    @property
    def scientific(self) -> str:
        return self.taxon.scientific

    def trait_caption(self) -> str:
        """One sentence of visible traits, true of every image of the species."""
        pattern = "no pattern" if self.pattern == "plain" else f"{self.pattern_colour} {self.pattern} pattern"
        name = self.taxon.common_name or self.scientific
        return (
            f"{name} shows a {self.shape} {self.colour} {self.plan} body with {pattern} "
            f"and {MARK_WORDS[self.marks - 1]} mark{'s' if self.marks > 1 else ''} on top."
        )


@dataclass(frozen=True)
class ToyImage:
    """One rendered image with its nuisance variables (used by the INQUIRE-style queries)."""

    uuid: str
    species: ToySpecies
    background: str
    tilt: str
    jpeg: bytes = field(repr=False)


def _branching(n_species: int) -> dict[str, int]:
    branching = {rank: 1 for rank in RANKS}
    while math.prod(branching.values()) < n_species:
        grown = False
        for rank in _GROWTH_ORDER:
            if math.prod(branching.values()) >= n_species:
                break
            if branching[rank] < _RANK_LIMIT[rank]:
                branching[rank] += 1
                grown = True
        if not grown:
            raise ValueError(f"the toy tree holds at most {math.prod(_RANK_LIMIT.values())} species")
    return branching


class _Namer:
    """Unique Latin-looking names per rank."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def __call__(self, rank: str) -> str:
        while True:
            stem = "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(2, 3)))
            name = stem + self.rng.choice(_RANK_SUFFIX[rank])
            if name not in self.used:
                self.used.add(name)
                return name.lower() if rank == "species" else name.capitalize()


def make_species(n_species: int, seed: int = 0) -> list[ToySpecies]:
    """The toy taxonomy: ``n_species`` species whose traits follow their ranks."""
    if n_species < 2:
        raise ValueError("the toy tree needs at least 2 species")
    rng = random.Random(seed)
    namer = _Namer(rng)
    branching = _branching(n_species)
    names: dict[tuple[int, ...], str] = {}
    species = []
    for index in range(n_species):
        digits, rest = [], index
        for rank in reversed(RANKS):
            digits.append(rest % branching[rank])
            rest //= branching[rank]
        path = tuple(reversed(digits))  # one local index per rank, kingdom first
        ranks = []
        for depth, rank in enumerate(RANKS):
            key = path[: depth + 1]
            if key not in names:
                names[key] = namer(rank)
            ranks.append(names[key])
        plan = PLANS[path[0]]
        colour = list(COLOURS)[path[2]]
        shape, pattern = SHAPES[path[3]], PATTERNS[path[4]]
        pattern_colour = list(PATTERN_COLOURS)[path[5]]
        marks = path[6] + 1
        common = "" if index % 5 == 4 else f"{MARK_WORDS[marks - 1]}-marked {pattern} {colour} {plan}"
        taxon = Taxon(*ranks, common_name=common.capitalize())
        species.append(ToySpecies(index, taxon, plan, colour, shape, pattern, pattern_colour, marks))
    return species


def render(sp: ToySpecies, rng: random.Random, size: int, background: str, tilt: str) -> Image.Image:
    """Draw one image of a species at ``size`` x ``size`` pixels (drawn at 2x, then downsampled)."""
    s = size * 2
    bg = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in BACKGROUNDS[background])
    img = Image.new("RGB", (s, s), bg)
    body = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(body)
    cx, cy = s / 2 + rng.uniform(-0.06, 0.06) * s, s / 2 + rng.uniform(-0.06, 0.06) * s
    scale = rng.uniform(0.85, 1.1) * s
    w, h = {"round": (0.5, 0.5), "long": (0.66, 0.36), "tall": (0.36, 0.62), "square": (0.48, 0.48)}[sp.shape]
    w, h = w * scale, h * scale
    colour = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLOURS[sp.colour])
    dark = tuple(c // 2 for c in colour)
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    lw = max(2, s // 40)
    if sp.plan == "crawler":  # legs under an oval body, a head on the right
        for i in range(3):
            x = box[0] + w * (0.25 + 0.25 * i)
            d.line((x, cy, x - w * 0.1, box[3] + h * 0.25), fill=dark, width=lw)
            d.line((x, cy, x + w * 0.1, box[3] + h * 0.25), fill=dark, width=lw)
        d.ellipse((box[2] - w * 0.08, cy - h * 0.18, box[2] + w * 0.22, cy + h * 0.18), fill=dark)
    elif sp.plan == "sprout":  # a stem with two leaves under the body
        d.line((cx, cy, cx, min(s - 2, box[3] + h * 0.45)), fill=(60, 120, 40), width=lw * 2)
        d.polygon([(cx, box[3] + h * 0.2), (cx - w * 0.45, box[3] + h * 0.05), (cx - w * 0.2, box[3] + h * 0.35)],
                  fill=(60, 140, 50))
        d.polygon([(cx, box[3] + h * 0.25), (cx + w * 0.45, box[3] + h * 0.1), (cx + w * 0.2, box[3] + h * 0.4)],
                  fill=(60, 140, 50))
    else:  # cap: a pale stalk under the body
        d.rectangle((cx - w * 0.1, cy, cx + w * 0.1, min(s - 2, box[3] + h * 0.5)), fill=(230, 220, 200))
    shape_mask = Image.new("L", (s, s), 0)
    m = ImageDraw.Draw(shape_mask)
    if sp.shape == "square":
        m.rectangle(box, fill=255)
    elif sp.plan == "cap":
        m.chord((box[0], box[1], box[2], box[3] + h * 0.6), 180, 360, fill=255)
    else:
        m.ellipse(box, fill=255)
    body.paste(colour, (0, 0), shape_mask)
    # the pattern is drawn over the whole box, then clipped to the body shape
    pattern = Image.new("L", (s, s), 0)
    p = ImageDraw.Draw(pattern)
    step = max(4, int(min(w, h) / 4))
    xs = range(int(box[0]), int(box[2]), step)
    ys = range(int(box[1]), int(box[3]), step)
    for i, x in enumerate(xs):
        if sp.pattern == "striped":
            p.rectangle((x, box[1], x + step // 2 - 1, box[3]), fill=255)
        for j, y in enumerate(ys):
            if sp.pattern == "spotted":
                p.ellipse((x + step / 4, y + step / 4, x + 3 * step / 4, y + 3 * step / 4), fill=255)
            elif sp.pattern == "checked" and (i + j) % 2 == 0:
                p.rectangle((x, y, x + step - 1, y + step - 1), fill=255)
    body.paste(PATTERN_COLOURS[sp.pattern_colour], (0, 0), ImageChops.multiply(pattern, shape_mask))
    # marks: small dark dots in a row above the body
    r = max(3, s // 28)
    for i in range(sp.marks):
        x = cx + (i - (sp.marks - 1) / 2) * r * 3
        d.ellipse((x - r, box[1] - r * 3, x + r, box[1] - r), fill=(15, 15, 15))
    angle = {"upright": 0.0, "leaning left": 18.0, "leaning right": -18.0}[tilt] + rng.uniform(-5, 5)
    body = body.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    img.paste(body, (0, 0), body)
    return img.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.4)))


def _uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def images(species: list[ToySpecies], per_species: int, seed: int, split: str, size: int) -> Iterator[ToyImage]:
    """Rendered images, species-major, each from its own seeded generator."""
    for sp in species:
        for k in range(per_species):
            rng = random.Random(f"{seed}/{split}/{sp.index}/{k}")
            background = rng.choice(list(BACKGROUNDS))
            tilt = rng.choice(TILTS)
            yield ToyImage(_uuid(rng), sp, background, tilt, _jpeg(render(sp, rng, size, background, tilt)))


def shard_sample(image: ToyImage, caption: str | None = None) -> dict[str, object]:
    """A sample with the TreeOfLife-10M members (``taxonTag.txt`` spelled as in the original)."""
    sample: dict[str, object] = {"__key__": image.uuid, "jpg": image.jpeg}
    for key, text in tol_texts(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    for key, text in tol_names(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    sample["caption.txt"] = caption if caption is not None else image.species.trait_caption()
    return sample


def write_shards(samples: Iterator[dict], out_dir: Path, shard_size: int, desc: str) -> dict[str, int]:
    """Write ``shard-%06d.tar`` files atomically and ``sizes.json``; returns per-shard counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    batch: list[dict] = []

    def flush():
        name = f"shard-{len(sizes):06d}.tar"

        def write(tmp: Path):
            with wds.TarWriter(str(tmp), mtime=0) as sink:
                for sample in batch:
                    sink.write(sample)

        atomic_write(out_dir / name, write)
        sizes[name] = len(batch)
        batch.clear()

    for sample in tqdm(samples, desc=desc, unit="img", leave=False):
        batch.append(sample)
        if len(batch) == shard_size:
            flush()
    if batch:
        flush()
    atomic_write(out_dir / "sizes.json", lambda tmp: tmp.write_text(json.dumps(sizes, indent=1)))
    return sizes


def _save_images(items: list[ToyImage], root: Path, name) -> list[str]:
    paths = []
    for im in items:
        rel = name(im)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(im.jpeg)
        paths.append(rel)
    return paths


def _classification(species: list[ToySpecies], items: list[ToyImage], root: Path) -> None:
    """Zero-shot sets in the original's three layouts, sharing one image folder."""
    paths = _save_images(items, root, lambda im: f"images/{im.species.taxon.genus}_{im.species.taxon.species}/{im.uuid}.jpg")
    ranks = [{r: im.species.taxon.rank(r) for r in RANKS} for im in items]
    # camera-trap layout: lower-case ranks in `cls`, common name, filepath, uuid; no index, no class column
    pl.DataFrame({
        "scientific_name": [im.species.scientific for im in items],
        "common_name": [im.species.taxon.common_name for im in items],
        **{("cls" if r == "class" else r): [row[r].lower() for row in ranks] for r in RANKS},
        "filepath": paths,
        "uuid": [im.uuid for im in items],
    }).write_csv(root / "camera_trap.csv")
    # meta-album / NABirds layout: unnamed index, filepath, class (scientific name, used as is)
    pl.DataFrame({"": range(len(items)), "filepath": paths, "class": [im.species.scientific for im in items]}
                 ).write_csv(root / "metadata.csv")
    # rare-species layout: unnamed index, capitalised ranks in `cls`, common_name, filepath, class
    pl.DataFrame({
        "": range(len(items)),
        **{("cls" if r == "class" else r): [row[r] for row in ranks] for r in RANKS},
        "common_name": [im.species.taxon.common_name for im in items],
        "filepath": paths,
        "class": [im.species.scientific for im in items],
    }).write_csv(root / "rare_species.csv")


def _retrieval(items: list[ToyImage], root: Path) -> None:
    ids = {im.uuid: str(100000 + i) for i, im in enumerate(items)}
    _save_images(items, root, lambda im: f"images/{ids[im.uuid]}.jpg")
    pl.DataFrame({
        "": range(len(items)),
        "id": list(ids.values()),
        "source_url": [f"toy://retrieval/{i}.jpg" for i in ids.values()],
        "captions": [f"{im.species.scientific}, {im.species.trait_caption()}" for im in items],
        "md5": [hashlib.md5(im.jpeg).hexdigest() for im in items],
    }).write_csv(root / "toy_retrieval.csv")


def _queries(pool: list[ToyImage], rng: random.Random, n_queries: int):
    """Trait queries, each built from a pool image so it has a positive, spread over INQUIRE's
    supercategories; the predicate decides relevance."""

    def make(supercategory: str, im: ToyImage):
        sp = im.species
        if supercategory == "Appearance":
            text = f"a {sp.colour} organism with a {sp.pattern} pattern"
            return text, lambda o: (o.species.colour, o.species.pattern) == (sp.colour, sp.pattern)
        if supercategory == "Behavior":
            return f"a {sp.plan} {im.tilt}", lambda o: (o.species.plan, o.tilt) == (sp.plan, im.tilt)
        if supercategory == "Context":
            text = f"a {sp.colour} organism on a {im.background} background"
            return text, lambda o: (o.species.colour, o.background) == (sp.colour, im.background)
        return sp.taxon.common_name or sp.scientific, lambda o: o.species.index == sp.index

    queries, seen, tries = [], set(), 0
    while len(queries) < n_queries and tries < 100 * n_queries:
        tries += 1
        supercategory = SUPERCATEGORIES[len(queries) % len(SUPERCATEGORIES)]
        text, predicate = make(supercategory, rng.choice(pool))
        if text not in seen:
            seen.add(text)
            queries.append((text, supercategory, predicate))
    return queries


def _inquire(pool: list[ToyImage], root: Path, n_queries: int, n_candidates: int,
             seed: int) -> None:
    rng = random.Random(f"{seed}/inquire")
    _save_images(pool, root, lambda im: f"images/{im.uuid}.jpg")
    image_ids = {im.uuid: 5_000_000 + i for i, im in enumerate(pool)}
    queries, rows = [], []
    for qid, (text, supercategory, predicate) in enumerate(_queries(pool, rng, n_queries), start=1):
        positives = [im for im in pool if predicate(im)]
        negatives = [im for im in pool if not predicate(im)]
        n_pos = min(len(positives), max(1, int(n_candidates * rng.uniform(0.05, 0.3))))
        chosen = rng.sample(positives, n_pos) + rng.sample(negatives, min(len(negatives), n_candidates - n_pos))
        rng.shuffle(chosen)
        queries.append({"query_id": qid, "query_text": text, "supercategory": supercategory,
                        "category": f"toy {supercategory.lower()}", "iconic_group": "Toy"})
        rows += [{"query": text, "filepath": f"images/{im.uuid}.jpg", "relevant": int(predicate(im)),
                  "inat24_image_id": image_ids[im.uuid], "supercategory": supercategory} for im in chosen]
    schemas.INQUIRE_QUERIES.frame(queries).write_csv(root / "queries.csv")
    schemas.INQUIRE_RERANK.frame(rows).write_parquet(root / "rerank.parquet")


def _wiki(species: list[ToySpecies], root: Path) -> None:
    rows, species_rows = [], []
    for sp in species:
        t = sp.taxon
        ranks = {r: t.rank(r) for r in RANKS}
        content = (
            f"{sp.scientific} is a {sp.plan} of the family {t.family}, order {t.order}.\n"
            f"Description. Adults have a {sp.shape}, {sp.colour} body"
            + ("" if sp.pattern == "plain" else f" covered in a {sp.pattern_colour} {sp.pattern} pattern")
            + f". A row of {MARK_WORDS[sp.marks - 1]} dark mark{'s' if sp.marks > 1 else ''} sits above the body. "
            f"It is found in toy habitats across the {t.kingdom} collection."
        )
        binomial = sp.scientific
        species_rows.append({"binomial": binomial, **ranks})
        rows.append({
            "binomial": binomial, **ranks, "content": content, "title": binomial,
            "pageid": 1000 + sp.index, "revid": 9000 + sp.index,
            "url": f"https://en.wikipedia.org/?curid={1000 + sp.index}", "section": "Description",
            "fetched_at": None, "license": "CC BY-SA 4.0",
        })
    frame = schemas.WIKI_DESCRIPTIONS.frame(rows).with_columns(
        pl.lit("2026-01-01T00:00:00Z").str.to_datetime(time_zone="UTC").alias("fetched_at"))
    frame.write_parquet(root / "wiki_descriptions.parquet")
    schemas.SPECIES_LIST.frame(species_rows).write_csv(root / "species.csv")


def _format_examples(species: list[ToySpecies], root: Path) -> None:
    by_class: dict[str, list[ToySpecies]] = {}
    for sp in species:
        by_class.setdefault(sp.taxon.klass, []).append(sp)
    rows = [
        {"class": klass, "description": "\n\n".join(
            f"{i}. The {sp.taxon.common_name or sp.scientific}, {sp.scientific}, displays a {sp.shape} "
            f"{sp.colour} body with {sp.pattern} markings." for i, sp in enumerate(members[:3], start=1))}
        for klass, members in by_class.items()
    ]
    schemas.FORMAT_EXAMPLES.frame(rows).write_parquet(root / "format_examples.parquet")


@dataclass(frozen=True)
class ToyConfig:
    species: int = 64
    images_per_species: int = 32
    val_per_species: int = 4
    eval_per_species: int = 4
    inquire_queries: int = 24
    inquire_candidates: int = 100
    image_size: int = 64
    shard_size: int = 256
    seed: int = 0


def generate(out: str | Path, config: ToyConfig = ToyConfig()) -> dict[str, object]:
    """Write the whole toy tree of life under ``out`` and return its manifest.

    Layout: ``train/`` and ``val/`` shards with ``sizes.json``; ``catalog.parquet``;
    ``zeroshot/`` (camera-trap, asis and rare-species CSVs over ``images/``);
    ``retrieval/`` (``toy_retrieval.csv`` + ``images/{id}.jpg``); ``inquire/``
    (``queries.csv``, ``rerank.parquet``, ``images/``); ``wiki/`` (species
    CSV, ``wiki_descriptions.parquet``); ``format_examples.parquet``; ``manifest.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    species = make_species(config.species, config.seed)
    catalog = []
    for split, per in (("train", config.images_per_species), ("val", config.val_per_species)):
        def samples(split=split, per=per):
            for i, im in enumerate(images(species, per, config.seed, split, config.image_size)):
                t = im.species.taxon
                catalog.append({"uuid": im.uuid, **{r: t.rank(r) for r in RANKS}, "common_name": t.common_name,
                                "split": split, "shard": f"shard-{i // config.shard_size:06d}.tar"})
                yield shard_sample(im)

        write_shards(samples(), out / split, config.shard_size, desc=f"toy {split} shards")
    schemas.write_parquet_atomic(schemas.CATALOG.frame(catalog), out / "catalog.parquet")
    eval_images = list(images(species, config.eval_per_species, config.seed, "eval", config.image_size))
    _classification(species, eval_images, out / "zeroshot")
    retrieval_images = list(images(species, 2, config.seed, "retrieval", config.image_size))
    _retrieval(retrieval_images, out / "retrieval")
    pool = list(images(species, 8, config.seed, "inquire", config.image_size))
    _inquire(pool, out / "inquire", config.inquire_queries, config.inquire_candidates, config.seed)
    (out / "wiki").mkdir(exist_ok=True)
    _wiki(species, out / "wiki")
    _format_examples(species, out)
    manifest = {
        "config": config.__dict__,
        "species": len(species),
        "train_images": len(species) * config.images_per_species,
        "val_images": len(species) * config.val_per_species,
        "zeroshot_images": len(eval_images),
        "retrieval_pairs": len(retrieval_images),
        "inquire_queries": config.inquire_queries,
    }
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    return manifest
