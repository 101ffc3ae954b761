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
from collections.abc import Callable, Iterable

from biocap_core.toy.render import ToyImage
from biocap_core.toy.species import COLOURS, MARK_WORDS, PATTERN_COLOURS, PATTERNS, PLANS, SHAPES

#: The trait phrases of a caption, in the order they are stated.
TRAITS = ("plan", "colour", "shape", "pattern", "marks")
#: Every value a trait phrase can state; a pattern is ``"plain"`` or ``"<colour> <pattern>"``.
TRAIT_VALUES: dict[str, tuple] = {
    "plan": PLANS,
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "pattern": ("plain",)
    + tuple(f"{c} {p}" for c in PATTERN_COLOURS for p in PATTERNS if p != "plain"),
    "marks": tuple(range(len(MARK_WORDS) + 1)),
}
_PATTERN_NOUNS = {"striped": "stripes", "spotted": "spots", "checked": "checks"}

Stated = dict[str, object]  # trait -> the value a caption states, None where it says nothing


def true_traits(image: ToyImage) -> Stated:
    """What each trait phrase of ``image``'s caption states when it is right."""
    sp = image.species
    return {
        "plan": sp.plan,
        "colour": sp.colour,
        "shape": sp.shape,
        "pattern": "plain" if sp.pattern == "plain" else f"{sp.pattern_colour} {sp.pattern}",
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
    image: ToyImage, rng: random.Random, noisy: Iterable[str] = (), name: bool = True
) -> str:
    """The caption of one photo. Each trait in ``noisy`` is missing or wrong, at even odds;
    ``name=False`` leaves out the species name (for ``"<species>, <caption>"`` tables)."""
    stated = true_traits(image)
    for trait in noisy:
        wrong = [v for v in TRAIT_VALUES[trait] if v != stated[trait]]
        stated[trait] = None if rng.random() < 0.5 else rng.choice(wrong)
    shape = rng.choice(_SHAPES)
    return shape(image, stated, image.species.scientific if name else "")


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _subject(image: ToyImage, stated: Stated) -> str:
    """``a juvenile round red crawler``; a missing trait is left out, a missing plan says
    organism."""
    words = ["juvenile" if image.stage == "juvenile" else "", stated["shape"], stated["colour"]]
    return _a(" ".join([w for w in words if w] + [stated["plan"] or "organism"]))


def _features(image: ToyImage, stated: Stated) -> str:
    """``white stripes and two marks on top``: the pattern and marks phrases that are stated."""
    out = []
    pattern, marks = stated["pattern"], stated["marks"]
    if pattern == "plain":
        out.append("no pattern")
    elif pattern:
        colour, kind = pattern.split()
        out.append(f"{colour} {_PATTERN_NOUNS[kind]}")
    if marks == 0:
        out.append("no marks yet" if image.stage == "juvenile" else "no marks")
    elif marks:
        out.append(f"{MARK_WORDS[marks - 1]} mark{'s' if marks > 1 else ''} on top")
    return " and ".join(out)


def _juvenile(image: ToyImage) -> str:
    return (
        " Being a juvenile, it is smaller and paler than an adult."
        if image.stage == "juvenile"
        else ""
    )


def _named_first(image: ToyImage, stated: Stated, name: str) -> str:
    """A juvenile round red crawler (Name), leaning left, on a dark background. It has ..."""
    features = _features(image, stated)
    subject = _subject(image, stated)
    text = (
        f"{subject[0].upper()}{subject[1:]}{f' ({name})' if name else ''}, {image.tilt}, "
        f"on a {image.background} background."
    )
    return text + (f" It has {features}." if features else "") + _juvenile(image)


def _photo_shows(image: ToyImage, stated: Stated, name: str) -> str:
    """This photo shows a round red crawler, Name, upright against a pale backdrop. Its body ..."""
    features = _features(image, stated)
    text = (
        f"This photo shows {_subject(image, stated)}{f', {name},' if name else ''} {image.tilt} "
        f"against a {image.background} backdrop."
    )
    return text + (f" Its body has {features}." if features else "") + _juvenile(image)


def _pose_first(image: ToyImage, stated: Stated, name: str) -> str:
    """Leaning right, a round red crawler of the species Name is seen on pale ground, with ..."""
    features = _features(image, stated)
    text = (
        f"{image.tilt.capitalize()}, {_subject(image, stated)}"
        f"{f' of the species {name}' if name else ''} is seen on {image.background} ground"
    )
    return text + (f", with {features}." if features else ".") + _juvenile(image)


def _close_up(image: ToyImage, stated: Stated, name: str) -> str:
    """Close-up of a round red crawler (Name) on a dark background, upright. Visible: ..."""
    features = _features(image, stated)
    text = (
        f"Close-up of {_subject(image, stated)}{f' ({name})' if name else ''} "
        f"on a {image.background} background, {image.tilt}."
    )
    return text + (f" Visible: {features}." if features else "") + _juvenile(image)


_SHAPES: tuple[Callable[[ToyImage, Stated, str], str], ...] = (
    _named_first,
    _photo_shows,
    _pose_first,
    _close_up,
)
