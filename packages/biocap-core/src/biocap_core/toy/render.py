"""Drawing toy images: one species' traits on a varied background, as JPEG bytes.

Position, size, tilt, background and life stage vary per image. Tilt (the pose), background
(the setting) and life stage are drawn per image and recorded, so that a caption of that photo
can state them while the species name cannot: juveniles are smaller and paler than adults and
have not grown their marks yet. Every image has its own seeded generator, so the same arguments
give the same bytes.
"""

from __future__ import annotations

import io
import random
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from biocap_core.toy.species import COLOURS, MARK_COLOURS, PATTERN_COLOURS, ToySpecies

BACKGROUNDS = {"pale": (215, 210, 195), "dark": (60, 62, 58)}
TILTS = ("upright", "leaning left", "leaning right")
#: Share of images that show a juvenile.
JUVENILE_SHARE = 0.25
#: Juveniles next to adults: body size, and how far their colour is blended towards white.
_JUVENILE_SCALE, _JUVENILE_PALENESS = 0.7, 0.12


@dataclass(frozen=True)
class ToyImage:
    """One rendered image with what varies per image (stated by its caption, used by the
    INQUIRE-style queries)."""

    uuid: str
    species: ToySpecies
    background: str
    tilt: str
    stage: str
    jpeg: bytes = field(repr=False)


Box = tuple[float, float, float, float]  # left, top, right, bottom


def render(
    sp: ToySpecies, rng: random.Random, size: int, background: str, tilt: str, stage: str = "adult"
) -> Image.Image:
    """Draw one image of a species at ``size`` x ``size`` pixels (drawn at 2x, then downsampled)."""
    juvenile = stage == "juvenile"
    s = size * 2
    bg = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in BACKGROUNDS[background])
    img = Image.new("RGB", (s, s), bg)
    body = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(body)
    cx, cy = s / 2 + rng.uniform(-0.06, 0.06) * s, s / 2 + rng.uniform(-0.06, 0.06) * s
    scale = rng.uniform(0.85, 1.1) * s * (_JUVENILE_SCALE if juvenile else 1.0)
    w, h = _SHAPE_SIZES[sp.shape]
    w, h = w * scale, h * scale
    colour = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLOURS[sp.colour])
    if juvenile:
        colour = tuple(round(c + (255 - c) * _JUVENILE_PALENESS) for c in colour)
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    _draw_plan(d, sp.plan, (cx, cy, w, h), s, tuple(c // 2 for c in colour))
    shape_mask = _shape_mask(sp, box, h, s)
    body.paste(colour, (0, 0), shape_mask)
    pattern = _pattern_mask(sp.pattern, box, min(w, h), s, shape_mask)
    body.paste(PATTERN_COLOURS[sp.pattern_colour], (0, 0), ImageChops.multiply(pattern, shape_mask))
    if not juvenile:
        _draw_marks(d, sp.marks, MARK_COLOURS[sp.mark_colour], cx, box[1], s)
    angle = {"upright": 0.0, "leaning left": 18.0, "leaning right": -18.0}[tilt] + rng.uniform(
        -5, 5
    )
    body = body.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    img.paste(body, (0, 0), body)
    return img.resize((size, size), Image.LANCZOS).filter(
        ImageFilter.GaussianBlur(rng.uniform(0, 0.4))
    )


#: Body width and height per shape, as fractions of the body's scale.
_SHAPE_SIZES = {
    "round": (0.5, 0.5),
    "long": (0.76, 0.32),
    "tall": (0.32, 0.7),
    "square": (0.48, 0.48),
}


def _draw_plan(
    d: ImageDraw.ImageDraw,
    plan: str,
    centre: tuple[float, float, float, float],
    s: int,
    dark: tuple,
) -> None:
    """What the body plan adds around the body (``centre``: x, y, width, height): legs and a head,
    a stem and leaves, or a stalk."""
    cx, cy, w, h = centre
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    lw = max(2, s // 20)
    if plan == "crawler":  # legs under an oval body, a head on the right
        for i in range(3):
            x = box[0] + w * (0.25 + 0.25 * i)
            d.line((x, cy, x - w * 0.1, box[3] + h * 0.25), fill=dark, width=lw)
            d.line((x, cy, x + w * 0.1, box[3] + h * 0.25), fill=dark, width=lw)
        d.ellipse((box[2] - w * 0.08, cy - h * 0.18, box[2] + w * 0.22, cy + h * 0.18), fill=dark)
    elif plan == "sprout":  # a stem with two leaves under the body
        d.line((cx, cy, cx, min(s - 2, box[3] + h * 0.45)), fill=(60, 120, 40), width=lw * 2)
        for leaf in (((0, 0.2), (-0.7, 0.0), (-0.3, 0.5)), ((0, 0.25), (0.7, 0.05), (0.3, 0.55))):
            d.polygon([(cx + w * x, box[3] + h * y) for x, y in leaf], fill=(60, 140, 50))
    else:  # cap: a pale stalk under the body
        d.rectangle(
            (cx - w * 0.1, cy, cx + w * 0.1, min(s - 2, box[3] + h * 0.5)), fill=(230, 220, 200)
        )


def _shape_mask(sp: ToySpecies, box: Box, h: float, s: int) -> Image.Image:
    """The body's outline as a mask: a square, a cap's dome, or an oval."""
    mask = Image.new("L", (s, s), 0)
    m = ImageDraw.Draw(mask)
    if sp.shape == "square":
        m.rectangle(box, fill=255)
    elif sp.plan == "cap":
        m.chord((box[0], box[1], box[2], box[3] + h * 0.6), 180, 360, fill=255)
    else:
        m.ellipse(box, fill=255)
    return mask


def _pattern_mask(
    pattern: str, box: Box, short_side: float, s: int, shape_mask: Image.Image
) -> Image.Image:
    """The pattern drawn over the whole box (the caller clips it to the body shape); for a plain
    body, a rim along its outline (about a twenty-fourth of the image wide)."""
    if pattern == "plain":
        inner = shape_mask.filter(ImageFilter.MinFilter(2 * (s // 24) + 1))
        return ImageChops.subtract(shape_mask, inner)
    mask = Image.new("L", (s, s), 0)
    p = ImageDraw.Draw(mask)
    step = max(4, int(short_side / 4))
    xs = range(int(box[0]), int(box[2]), step)
    ys = range(int(box[1]), int(box[3]), step)
    for i, x in enumerate(xs):
        if pattern == "striped":
            p.rectangle((x, box[1], x + step // 2 - 1, box[3]), fill=255)
        for j, y in enumerate(ys):
            if pattern == "spotted":
                p.ellipse(
                    (x + step / 4, y + step / 4, x + 3 * step / 4, y + 3 * step / 4), fill=255
                )
            elif pattern == "checked" and (i + j) % 2 == 0:
                p.rectangle((x, y, x + step - 1, y + step - 1), fill=255)
    return mask


def _draw_marks(
    d: ImageDraw.ImageDraw, marks: int, colour: tuple, cx: float, top: float, s: int
) -> None:
    """Coloured dots with a pale rim in a row above the body, big enough (about a fifth of the
    image across) to be seen at 64 px on a pale or a dark background."""
    r = max(3, s // 9)
    for i in range(marks):
        x = cx + (i - (marks - 1) / 2) * r * 3
        d.ellipse(
            (x - r, top - r * 3, x + r, top - r),
            fill=colour,
            outline=(240, 240, 240),
            width=max(1, r // 3),
        )


def _uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def images(
    species: list[ToySpecies],
    per_species: int,
    seed: int,
    split: str,
    size: int,
    shuffle: bool = False,
) -> Iterator[ToyImage]:
    """Rendered images, each from its own seeded generator: species-major, or with ``shuffle`` in
    an order drawn from the seed (training shards: a species' images spread over every shard, as
    the shard builder writes them, so a shuffle buffer's batches mix all species)."""
    order = [(sp, k) for sp in species for k in range(per_species)]
    if shuffle:
        random.Random(f"{seed}/{split}/order").shuffle(order)
    for sp, k in order:
        rng = random.Random(f"{seed}/{split}/{sp.index}/{k}")
        background = rng.choice(list(BACKGROUNDS))
        tilt = rng.choice(TILTS)
        stage = "juvenile" if rng.random() < JUVENILE_SHARE else "adult"
        uuid = _uuid(rng)
        jpeg = _jpeg(render(sp, rng, size, background, tilt, stage))
        yield ToyImage(uuid, sp, background, tilt, stage, jpeg)
