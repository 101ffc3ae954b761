"""The toy taxonomy: species names and the visible traits each rank gives them.

Every visible trait follows the taxonomy, so a model can learn it from names
or captions (what varies per image, see :mod:`.render` and :mod:`.captions`):

========  ==========================  ================================
rank      trait                       example
========  ==========================  ================================
kingdom   body plan                   crawler (legged body), sprout (stem + leaves), cap (mushroom)
class     body colour                 red, blue ...
order     body shape                  round, long, tall, square
family    pattern                     plain, striped, spotted, checked
genus     pattern colour              white, black ... (a plain body's rim)
species   number of marks             1-4 marks, one colour per number
========  ==========================  ================================

Every trait is drawn big or coloured enough for a 2-layer ViT to learn it in a minute of CPU
training: marks have a colour per number (trained with species labels for 1,024 steps, the demo's
vision tower tells one dark mark from two at chance, and names the species of 92% of adult photos
with coloured marks), a plain body shows its genus' colour as a rim, and legs, stems and leaves
are thick.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from biocap_core.taxonomy import RANKS, Taxon

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
PATTERN_COLOURS = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "brown": (110, 70, 30),
}
MARK_WORDS = ("one", "two", "three", "four")
#: The colour of a species' marks, by their number (one gold mark, two cyan marks ...).
MARK_COLOURS = {
    "gold": (235, 190, 20),
    "cyan": (40, 200, 230),
    "lime": (150, 220, 40),
    "violet": (160, 90, 230),
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
_SYLLABLES = (
    "ba",
    "ce",
    "di",
    "fo",
    "gu",
    "ka",
    "le",
    "mi",
    "no",
    "pu",
    "ra",
    "se",
    "ti",
    "vo",
    "xa",
    "zo",
    "bri",
    "cla",
    "dro",
    "fla",
    "gri",
    "pla",
    "stro",
    "tha",
)
# Each rank's branching grows in this order until the tree has enough leaves.
_GROWTH_ORDER = ("kingdom", "class", "species", "order", "family", "genus", "phylum")
_RANK_LIMIT = {
    "kingdom": len(PLANS),
    "class": len(COLOURS),
    "order": len(SHAPES),
    "family": len(PATTERNS),
    "genus": len(PATTERN_COLOURS),
    "species": len(MARK_WORDS),
    "phylum": 4,
}


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

    @property
    def mark_colour(self) -> str:
        return mark_colour(self.marks)


def mark_colour(marks: int) -> str:
    """The colour of ``marks`` marks (1-4)."""
    return list(MARK_COLOURS)[marks - 1]


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
            raise ValueError(
                f"the toy tree holds at most {math.prod(_RANK_LIMIT.values())} species"
            )
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
        common = (
            "" if index % 5 == 4 else f"{MARK_WORDS[marks - 1]}-marked {pattern} {colour} {plan}"
        )
        taxon = Taxon(*ranks, common_name=common.capitalize())
        species.append(
            ToySpecies(index, taxon, plan, colour, shape, pattern, pattern_colour, marks)
        )
    return species
