"""The toy's per-image variation, captions and INQUIRE queries, checked against what the
generator drew.

Captions are read back with this file's own parser (word lists from the toy's trait vocabulary),
never with the code that wrote them, and compared with ``attributes.parquet``.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image

from biocap_core import schemas
from biocap_core.shards import iter_samples
from biocap_core.toy import BACKGROUNDS, COLOURS, ToyConfig, generate, make_species, render
from biocap_core.toy.species import (
    MARK_COLOURS,
    MARK_WORDS,
    PATTERN_COLOURS,
    PLANS,
    SHAPES,
    mark_colour,
)

TRAITS = ("plan", "colour", "shape", "pattern", "marks")
_PATTERN_NOUNS = {"rim": "plain", "stripes": "striped", "spots": "spotted", "checks": "checked"}


def _one(found: set):
    """The value a caption states: the one value found, None if none, "several" if it
    contradicts itself."""
    return None if not found else next(iter(found)) if len(found) == 1 else "several"


def stated(caption: str, scientific: str) -> dict:
    """What a caption says of each trait and of the photo, read from its words."""
    text = caption.replace(scientific, " ").lower()

    def words(vocab):
        return {w for w in vocab if re.search(rf"\b{w}\b", text)}

    patterns = {
        f"{c} {_PATTERN_NOUNS[n]}"
        for c, n in re.findall(r"\b(\w+) (rim|stripes|spots|checks)\b", text)
    }
    marks = set()
    for count, colour in re.findall(rf"\b(no|{'|'.join(MARK_WORDS)})(?: (\w+))? marks?\b", text):
        n = 0 if count == "no" else MARK_WORDS.index(count) + 1
        # a number of marks is stated with its colour (two cyan marks), none without one
        marks.add(n if colour == (mark_colour(n) if n else "") else f"{count} {colour} marks")
    return {
        "plan": _one(words(PLANS)),
        "colour": _one(words(COLOURS)),
        "shape": _one(words(SHAPES)),
        "pattern": _one(patterns),
        "marks": _one(marks),
        "life_stage": "juvenile" if re.search(r"\bjuvenile\b", text) else "adult",
        "tilt": _one(set(re.findall(r"\b(upright|leaning left|leaning right)\b", text))),
        "background": _one(
            set(re.findall(r"\b(pale|dark) (?:background|backdrop|ground)\b", text))
        ),
    }


def truth(row: dict) -> dict:
    """What a right caption of the image in ``row`` (of attributes.parquet) states."""
    juvenile = row["life_stage"] == "juvenile"
    return {
        "plan": row["plan"],
        "colour": row["colour"],
        "shape": row["shape"],
        "pattern": f"{row['pattern_colour']} {row['pattern']}",
        "marks": 0 if juvenile else row["marks"],
        "life_stage": row["life_stage"],
        "tilt": row["tilt"],
        "background": row["background"],
    }


def wrong_or_missing(row: dict) -> list[str]:
    said, true = stated(row["caption"], row["scientific_name"]), truth(row)
    return [t for t in true if said[t] != true[t]]


def attributes(root) -> pl.DataFrame:
    return schemas.TOY_ATTRIBUTES.read(root / "attributes.parquet")


def test_every_caption_is_true_of_its_image(toy_dir):
    table = attributes(toy_dir)
    assert table.group_by("split").len().sort("split").rows() == [
        ("eval", 12 * 4),
        ("inquire", 12 * 8),
        ("retrieval", 12 * 2),
        ("train", 12 * 6),
        ("val", 12 * 4),
    ]
    captioned = table.filter(pl.col("caption").is_not_null())
    assert set(captioned["split"]) == {"train", "val", "retrieval"}
    for row in captioned.iter_rows(named=True):
        assert wrong_or_missing(row) == [], row["caption"]
        assert row["caption_errors"] == 0
    # the shards carry each image's own caption, and images of one species are told apart by them
    by_uuid = dict(zip(captioned["uuid"], captioned["caption"], strict=True))
    samples = list(iter_samples([str(p) for p in sorted((toy_dir / "train").glob("shard-*.tar"))]))
    assert {s["__key__"]: s["caption.txt"].decode() for s in samples} == {
        k: v for k, v in by_uuid.items() if k in {s["__key__"] for s in samples}
    }
    train = captioned.filter(pl.col("split") == "train")
    per_species = train.group_by("scientific_name").agg(pl.col("caption").n_unique())
    assert (per_species["caption"] > 1).all()
    assert len({c.split(" ", 2)[0] for c in train["caption"]}) >= 3  # several sentence shapes
    assert set(train["life_stage"]) == {"adult", "juvenile"}
    assert set(train["background"]) == set(BACKGROUNDS)
    # retrieval captions are "<species>, <caption>", as in the real tables
    retrieval = pl.read_csv(toy_dir / "retrieval" / "toy_retrieval.csv")
    sci = captioned.filter(pl.col("split") == "retrieval")["scientific_name"]
    assert all(c.startswith(f"{s}, ") for c, s in zip(retrieval["captions"], sci, strict=True))


def test_caption_noise_makes_exactly_that_share_of_trait_phrases_wrong_or_missing(tmp_path):
    base = dict(
        species=4,
        images_per_species=10,
        val_per_species=3,
        eval_per_species=1,
        inquire_queries=4,
        image_size=24,
        shard_size=16,
        seed=5,
    )
    generate(tmp_path / "noisy", ToyConfig(**base, caption_noise=0.3))
    generate(tmp_path / "clean", ToyConfig(**base))
    table = attributes(tmp_path / "noisy").filter(pl.col("caption").is_not_null())
    kinds = {"wrong": 0, "missing": 0}
    for split, n_images in (("train", 40), ("val", 12)):
        rows = list(table.filter(pl.col("split") == split).iter_rows(named=True))
        assert len(rows) == n_images
        errors = []
        for row in rows:
            bad = wrong_or_missing(row)
            assert set(bad) <= set(TRAITS), row["caption"]  # pose, setting and life stage stay true
            assert len(bad) == row["caption_errors"], row["caption"]
            errors += bad
            said = stated(row["caption"], row["scientific_name"])
            for t in bad:
                kinds["missing" if said[t] is None else "wrong"] += 1
        assert len(errors) == round(0.3 * n_images * len(TRAITS))
    # benchmark text is clean
    assert table.filter(pl.col("split") == "retrieval")["caption_errors"].sum() == 0
    assert kinds["wrong"] > 0 and kinds["missing"] > 0
    # noise changes the captions only: the same images, and a clean toy has none wrong
    noisy, clean = (
        list(iter_samples(str(tmp_path / d / "train" / "shard-000000.tar")))
        for d in ("noisy", "clean")
    )
    assert [s["jpg"] for s in noisy] == [s["jpg"] for s in clean]
    assert [s["caption.txt"] for s in noisy] != [s["caption.txt"] for s in clean]
    assert attributes(tmp_path / "clean")["caption_errors"].sum() == 0
    with pytest.raises(ValueError, match="caption_noise"):
        ToyConfig(caption_noise=1.5)


def _near(img: Image.Image, colour: tuple[int, int, int], distance: int) -> np.ndarray:
    """The pixels of ``img`` within ``distance`` (L1) of ``colour``."""
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    return pixels[np.abs(pixels - colour).sum(1) < distance]


def test_juveniles_are_smaller_paler_and_have_no_marks():
    for sp in make_species(12, seed=0):
        adult, young = (
            render(sp, random.Random(1), 96, "dark", "upright", stage)
            for stage in ("adult", "juvenile")
        )
        body_adult, body_young = (
            _near(adult, COLOURS[sp.colour], 90),
            _near(young, COLOURS[sp.colour], 90),
        )
        assert len(body_young) < 0.7 * len(body_adult)
        # the same draw, paler
        assert np.median(body_young, 0).sum() > np.median(body_adult, 0).sum() + 20
        marks = MARK_COLOURS[sp.mark_colour]
        assert len(_near(adult, marks, 60)) > 0 and len(_near(young, marks, 60)) == 0


def test_a_plain_body_shows_its_genus_colour_as_a_rim():
    """The genus' trait (the pattern colour) is visible on every body: a plain one has a rim of it
    (drawn on a juvenile, which has no marks with pale rims of their own, on the pale ground,
    which is far from both white and black)."""
    plain = [sp for sp in make_species(64, seed=0) if sp.pattern == "plain"]
    assert {sp.pattern_colour for sp in plain} == {"white", "black"}
    for sp in plain:
        young = render(sp, random.Random(2), 96, "pale", "upright", "juvenile")
        other = next(c for c in ("white", "black") if c != sp.pattern_colour)
        assert len(_near(young, PATTERN_COLOURS[sp.pattern_colour], 60)) > 100
        assert len(_near(young, PATTERN_COLOURS[other], 60)) == 0


def test_the_colour_a_caption_states_dominates_its_image(toy_dir):
    """Each pixel goes to the nearest named colour (body, pattern or ground); of the body colours,
    the one the caption states covers the most, for adults and for paler juveniles."""
    names = (
        list(COLOURS)
        + [f"pattern {c}" for c in PATTERN_COLOURS]
        + [f"ground {b}" for b in BACKGROUNDS]
    )
    palette = np.array(
        list(COLOURS.values()) + list(PATTERN_COLOURS.values()) + list(BACKGROUNDS.values())
    )
    samples = list(iter_samples([str(p) for p in sorted((toy_dir / "train").glob("shard-*.tar"))]))
    table = {r["uuid"]: r for r in attributes(toy_dir).iter_rows(named=True)}
    for s in samples:
        row = table[s["__key__"]]
        pixels = (
            np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB")).reshape(-1, 3).astype(int)
        )
        nearest = np.abs(pixels[:, None, :] - palette[None]).sum(-1).argmin(1)
        counts = np.bincount(nearest, minlength=len(names))[: len(COLOURS)]
        assert (
            names[counts.argmax()]
            == stated(row["caption"], row["scientific_name"])["colour"]
            == row["colour"]
        )


def _expected_relevance(query: str, supercategory: str, row: dict, names: dict[str, str]) -> bool:
    """Relevance read from the query's words and the image's true attributes (``names``: scientific
    name -> the name a species query uses, common where it has one; species may share one)."""
    stage = re.match(r"an? (juvenile|adult) ", query)
    if stage and row["life_stage"] != stage.group(1):
        return False
    if supercategory == "Species":
        name = query[stage.end() :] if stage else query
        return names[row["scientific_name"]].lower() == name.lower()
    checks = {
        "colour": re.search(rf"\b({'|'.join(COLOURS)})\b", query),
        "plan": re.search(rf"\b({'|'.join(PLANS)})\b", query),
        "pattern": re.search(r"with an? (\w+) pattern", query),
        "tilt": re.search(r"\b(upright|leaning left|leaning right)\b", query),
        "background": re.search(r"on an? (\w+) background", query),
    }
    assert any(checks.values()), query
    return all(row[key] == m.group(1) for key, m in checks.items() if m)


def test_inquire_relevance_follows_the_images_true_attributes(toy_dir):
    queries = schemas.INQUIRE_QUERIES.read(toy_dir / "inquire" / "queries.csv")
    rerank = schemas.INQUIRE_RERANK.read(toy_dir / "inquire" / "rerank.parquet")
    table = {
        r["uuid"]: r
        for r in attributes(toy_dir).filter(pl.col("split") == "inquire").iter_rows(named=True)
    }
    names = {
        sp.scientific: sp.taxon.common_name or sp.scientific for sp in make_species(12, seed=0)
    }
    supercategory = dict(zip(queries["query_text"], queries["supercategory"], strict=True))
    for row in rerank.iter_rows(named=True):
        image = table[row["filepath"].removeprefix("images/").removesuffix(".jpg")]
        expected = _expected_relevance(row["query"], supercategory[row["query"]], image, names)
        assert row["relevant"] == int(expected), (row["query"], image)
    for name in ("Appearance", "Behavior", "Context", "Species"):  # life stage in every one
        texts = queries.filter(pl.col("supercategory") == name)["query_text"]
        assert any(t.startswith("a juvenile ") for t in texts), name
    assert rerank.group_by("query").agg(pl.col("relevant").sum())["relevant"].min() >= 1


def test_cli_caption_noise(tmp_path):
    args = [
        sys.executable,
        "-m",
        "biocap_core",
        "toy",
        "--out",
        str(tmp_path / "toy"),
        "--species",
        "2",
        "--images-per-species",
        "5",
        "--val-per-species",
        "1",
        "--eval-per-species",
        "1",
        "--image-size",
        "16",
        "--caption-noise",
        "0.5",
    ]
    subprocess.run(args, check=True, capture_output=True, text=True)
    manifest = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert manifest["config"]["caption_noise"] == 0.5
    train = attributes(tmp_path / "toy").filter(pl.col("split") == "train")
    assert train["caption_errors"].sum() == round(0.5 * 10 * len(TRAITS))
    refused = subprocess.run(args[:-1] + ["1.5"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--caption-noise" in refused.stderr
