"""Per-image toy captions, written as an MLLM describing that one photo would write them.

A caption states the species' visible traits, its *trait phrases* (:data:`TRAITS`: body plan,
colour, shape, pattern, marks), and what only that photo shows: the pose (tilt), the setting
(background) and the life stage (a juvenile is smaller and paler and has no marks yet). So a
caption tells apart two photos that the species name cannot. Captions come in a few sentence
shapes, one drawn per image. With noise, an exact share of trait phrases is wrong or missing, as
MLLM captions sometimes are; pose, setting and life stage stay true.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from biocap_core.toy.render import ToyImage
from biocap_core.toy.species import (
    COLOURS,
    MARK_WORDS,
    PATTERN_COLOURS,
    PATTERNS,
    PLANS,
    SHAPES,
    mark_colour,
)

#: The trait phrases of a caption, in the order they are stated.
TRAITS = ("plan", "colour", "shape", "pattern", "marks")
#: Every value a trait phrase can state; a pattern is ``"<colour> <pattern>"`` (a plain body's
#: colour is its rim's).
TRAIT_VALUES: dict[str, tuple] = {
    "plan": PLANS,
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "pattern": tuple(f"{c} {p}" for c in PATTERN_COLOURS for p in PATTERNS),
    "marks": tuple(range(len(MARK_WORDS) + 1)),
}
_PATTERN_NOUNS = {"plain": "rim", "striped": "stripes", "spotted": "spots", "checked": "checks"}

Stated = dict[str, object]  # trait -> the value a caption states, None where it says nothing


def true_traits(image: ToyImage) -> Stated:
    """What each trait phrase of ``image``'s caption states when it is right."""
    sp = image.species
    return {
        "plan": sp.plan,
        "colour": sp.colour,
        "shape": sp.shape,
        "pattern": f"{sp.pattern_colour} {sp.pattern}",
        "marks": 0 if image.stage == "juvenile" else sp.marks,
    }


def noisy_phrases(n_images: int, share: float, rng: random.Random) -> dict[int, tuple[str, ...]]:
    """The trait phrases of ``n_images`` captions that go wrong or missing, image index -> traits:
    exactly ``round(share * n_images * len(TRAITS))`` of them, drawn by ``rng``."""
    slots = [(i, trait) for i in range(n_images) for trait in TRAITS]
    noisy: dict[int, set[str]] = {}
    for i, trait in rng.sample(slots, round(share * len(slots))):
        noisy.setdefault(i, set()).add(trait)
    return {i: tuple(t for t in TRAITS if t in traits) for i, traits in noisy.items()}


def caption(
    image: ToyImage,
    seed: int,
    split: str,
    index: int,
    noisy: Iterable[str] = (),
    name: bool = True,
) -> str:
    """The caption of the ``index``-th photo of ``split``, from a generator seeded by those alone,
    so every layout that carries the photo (the toy's shards, its download) gives the same text.
    Each trait in ``noisy`` is missing or wrong, at even odds; ``name=False`` leaves out the species
    name (for ``"<species>, <caption>"`` tables)."""
    rng = random.Random(f"{seed}/{split}/{index}/caption")
    stated = true_traits(image)
    for trait in noisy:
        wrong = [v for v in TRAIT_VALUES[trait] if v != stated[trait]]
        stated[trait] = None if rng.random() < 0.5 else rng.choice(wrong)
    return _write(rng.choice(_SHAPES), image, stated, image.species.scientific if name else "")


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _subject(image: ToyImage, stated: Stated) -> str:
    """``a juvenile round red crawler``; a missing trait is left out, a missing plan says
    organism."""
    words = ["juvenile" if image.stage == "juvenile" else "", stated["shape"], stated["colour"]]
    return _a(" ".join([w for w in words if w] + [stated["plan"] or "organism"]))


def _features(image: ToyImage, stated: Stated) -> str:
    """``white stripes and two cyan marks on top``: the pattern and marks phrases that are
    stated."""
    out = []
    pattern, marks = stated["pattern"], stated["marks"]
    if pattern:
        colour, kind = pattern.split()
        out.append(f"{'a ' if kind == 'plain' else ''}{colour} {_PATTERN_NOUNS[kind]}")
    if marks == 0:
        out.append("no marks yet" if image.stage == "juvenile" else "no marks")
    elif marks:
        words = f"{MARK_WORDS[marks - 1]} {mark_colour(marks)} mark{'s' if marks > 1 else ''}"
        out.append(f"{words} on top")
    return " and ".join(out)


def _juvenile(image: ToyImage) -> str:
    if image.stage != "juvenile":
        return ""
    return " Being a juvenile, it is smaller and paler than an adult."


#: The sentence shapes: (sentence, how it names the species, its features clause, what ends the
#: sentence instead when no pattern or marks are stated). ``{subject}`` is "a juvenile round red
#: crawler", ``{tilt}`` the pose, ``{background}`` the setting.
_SHAPES = (
    (
        "{Subject}{named}, {tilt}, on a {background} background.",
        " ({name})",
        " It has {features}.",
        "",
    ),
    (
        "This photo shows {subject}{named} {tilt} against a {background} backdrop.",
        ", {name},",
        " Its body has {features}.",
        "",
    ),
    (
        "{Tilt}, {subject}{named} is seen on {background} ground",
        " of the species {name}",
        ", with {features}.",
        ".",
    ),
    (
        "Close-up of {subject}{named} on a {background} background, {tilt}.",
        " ({name})",
        " Visible: {features}.",
        "",
    ),
)


def _write(shape: tuple[str, str, str, str], image: ToyImage, stated: Stated, name: str) -> str:
    sentence, named, with_features, bare = shape
    subject, features = _subject(image, stated), _features(image, stated)
    text = sentence.format(
        subject=subject,
        Subject=subject[0].upper() + subject[1:],
        tilt=image.tilt,
        Tilt=image.tilt.capitalize(),
        background=image.background,
        named=named.format(name=name) if name else "",
    )
    return text + (with_features.format(features=features) if features else bare) + _juvenile(image)
