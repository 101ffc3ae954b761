"""The image policy of the shard builder: what each catalog image becomes in a shard.

The default is the original's (BioCLIP's ``make_wds``): RGB, squashed to 224x224 with bicubic
resampling, stored as a JPEG of quality 100, images above PIL's decompression-bomb limit for
30,000 x 30,000 pixels refused. Two things differ, both on purpose:

* every image is stored RGB (the original converted only RGBA and palette images, so grayscale
  and CMYK JPEGs went into its shards as they came);
* a truncated image is skipped and listed in the errors table, where the original decoded it with
  PIL's ``LOAD_TRUNCATED_IMAGES`` and stored the missing part as grey.

JPEGs are decoded with PIL's draft mode (libjpeg's DCT scaling) to the smallest scale at least
twice the target side, then resized as above: 2-8x less decoding for the 400-1200 px images of
the download; the stored pixels differ from a full decode by about one level on average
(``--no-draft`` gives the original's exact decode).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

from PIL import Image, UnidentifiedImageError

#: The original's ``Image.MAX_IMAGE_PIXELS``: PIL refuses images of more than twice this.
ORIGINAL_MAX_PIXELS = 30_000 * 30_000
#: Draft to at least this many times the target side, so the bicubic resize still averages over
#: several decoded pixels per output pixel.
DRAFT_MARGIN = 2


class BadImage(Exception):
    """Why one image cannot go into a shard (the errors table's ``reason``)."""


@dataclass(frozen=True)
class ImagePolicy:
    """How images are stored: ``resize`` is ``squash`` (the original's), ``crop`` (short side to
    ``size``, then the centre square) or ``keep`` (the JPEG bytes copied untouched; other formats
    re-encoded at their own size)."""

    size: int = 224
    resize: str = "squash"
    quality: int = 100
    draft: bool = True
    max_pixels: int = ORIGINAL_MAX_PIXELS

    def __post_init__(self):
        if self.resize not in ("squash", "crop", "keep"):
            raise ValueError(f"resize {self.resize!r}: expected squash, crop or keep")
        if self.size < 1 or not 1 <= self.quality <= 100:
            raise ValueError(f"image size {self.size} / quality {self.quality} out of range")

    def describe(self) -> dict:
        return asdict(self)

    def apply(self, data: bytes) -> bytes:
        """The JPEG bytes to store for one image file's bytes; raises :class:`BadImage`."""
        if not data:
            raise BadImage("empty file")
        image = self._open(data)
        if self.resize == "keep" and image.format == "JPEG":
            return data
        try:
            if self.draft and self.resize != "keep" and image.format == "JPEG":
                side = self.size * DRAFT_MARGIN
                image.draft(
                    "RGB" if image.mode == "YCbCr" or image.mode == "RGB" else None, (side, side)
                )
            image = image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImage(_decode_reason(exc)) from exc
        image = self._resize(image)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=self.quality)  # as webdataset's encoder, quality 100
        return out.getvalue()

    def _open(self, data: bytes) -> Image.Image:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels  # PIL reads its limit from this module global
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise BadImage(f"decompression bomb: {exc}") from exc
        except UnidentifiedImageError:
            raise BadImage("corrupt: not an image file PIL can read") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImage(_decode_reason(exc)) from exc
        finally:
            Image.MAX_IMAGE_PIXELS = limit

    def _resize(self, image: Image.Image) -> Image.Image:
        size = self.size
        if self.resize == "squash":
            return image.resize((size, size), Image.BICUBIC)
        if self.resize == "keep":
            return image
        width, height = image.size
        scale = size / min(width, height)
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        return image.crop((left, top, left + size, top + size))


def _decode_reason(exc: Exception) -> str:
    return "truncated" if "truncated" in str(exc).lower() else f"corrupt: {exc}"
