"""The toy tree of life as the TreeOfLife-10M download lays it out, defects included, so that
``biocap-core shards`` can be tried (and is tested) end to end without the 2 TB download.

``metadata/catalog.csv`` with the real columns; ``dataset/eol/image_set_NN.tar.gz`` of
``<uuid>.jpg``; ``dataset/inat21/train/<NNNNN>_<Kingdom>_..._<species>/``;
``dataset/bioscan/partN/``; and the TreeOfLife-10M-Captions table
``captions/uuid_caption_description.parquet``. Images are spread over the three sources in turn,
and the first training rows carry the defects a real download has (:data:`DEFECTS`).
"""

from __future__ import annotations

import csv
import io
import random
import tarfile
from pathlib import Path

import polars as pl
from PIL import Image

from biocap_core.taxonomy import RANKS
from biocap_core.toy.captions import caption
from biocap_core.toy.dataset import ToyConfig
from biocap_core.toy.render import images
from biocap_core.toy.species import make_species

SOURCES = ("eol", "inat21", "bioscan")
CATALOG_COLUMNS = (
    "split",
    "treeoflife_id",
    "eol_content_id",
    "eol_page_id",
    "bioscan_part",
    "bioscan_filename",
    "inat21_filename",
    "inat21_cls_name",
    "inat21_cls_num",
    *RANKS,
    "common",
)
#: The defects of the first training rows, in order (row i's image is in source ``SOURCES[i % 3]``).
#: ``rgba``, ``palette``, ``cmyk``, ``gray`` and ``large`` are readable images in unusual forms;
#: the others leave the row without a sample.
DEFECTS = (
    "corrupt",
    "truncated",
    "rgba",
    "palette",
    "cmyk",
    "gray",
    "large",
    "bomb",
    "missing",
    "empty",
    "missing",
    "truncated",
    "missing",
    "corrupt",
    "no_taxon",
    "truncated",
    "no_source",
)
READABLE_DEFECTS = ("rgba", "palette", "cmyk", "gray", "large")
#: Image sets the EOL images are spread over.
EOL_SETS = 2


def write_download(out: str | Path, config: ToyConfig | None = None) -> dict:
    """Write the download under ``out``; returns ``{"rows", "defects": {uuid: defect}, ...}``."""
    out, config = Path(out), config or ToyConfig()
    species = make_species(config.species, config.seed)
    rows: list[dict] = []
    eol_members: list[list[tuple[str, bytes]]] = [[] for _ in range(EOL_SETS)]
    defects: dict[str, str] = {}
    captions = []
    for split, per in (("train", config.images_per_species), ("val", config.val_per_species)):
        for i, im in enumerate(images(species, per, config.seed, split, config.image_size)):
            defect = DEFECTS[i] if split == "train" and i < len(DEFECTS) else None
            row = _row(split, im, SOURCES[i % 3], i)
            data = _image(im.jpeg, defect, random.Random(f"{config.seed}/{im.uuid}"))
            if defect:
                defects[im.uuid] = defect
                if defect == "no_taxon":
                    row.update({r: "unknown" for r in RANKS}, common="")
                if defect == "no_source":
                    row.update(
                        eol_content_id="",
                        eol_page_id="",
                        inat21_filename="",
                        inat21_cls_name="",
                        inat21_cls_num="",
                        bioscan_part="",
                        bioscan_filename="",
                    )
            if data is not None and defect != "no_source":
                _place(out, row, data, eol_members[i % EOL_SETS])
            rows.append(row)
            captions.append(
                {
                    "uuid": im.uuid,
                    # the photo's caption, as the toy's own shards carry it
                    "caption": caption(im, config.seed, split, i),
                    "description": None,
                }
            )
    # a member no catalog row names, and one that is not an image: both passed over
    eol_members[0] += [
        ("0b9a1f7e-8c1d-4e59-9f6b-2a3c4d5e6f70.jpg", b"\xff\xd8\xff\xd9"),
        ("README", b"x"),
    ]
    for n, members in enumerate(eol_members, start=1):
        _write_tar(out / "dataset" / "eol" / f"image_set_{n:02d}.tar.gz", members)
    small = [dict(r, split="train_small") for r in rows[::4] if r["split"] == "train"]
    metadata = out / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    with open(metadata / "catalog.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, CATALOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows + small)
    (out / "captions").mkdir(exist_ok=True)
    pl.DataFrame(
        captions, schema={"uuid": pl.String, "caption": pl.String, "description": pl.String}
    ).write_parquet(out / "captions" / "uuid_caption_description.parquet")
    return {"rows": len(rows), "train_small_rows": len(small), "defects": defects}


def _row(split: str, im, source: str, i: int) -> dict:
    t = im.species.taxon
    row = dict.fromkeys(CATALOG_COLUMNS, "")
    row.update(
        {r: t.rank(r) for r in RANKS}, split=split, treeoflife_id=im.uuid, common=t.common_name
    )
    if source == "eol":
        row.update(eol_content_id=str(10_000 + i), eol_page_id=str(500 + im.species.index))
    elif source == "inat21":
        cls_name = "_".join([*(r.capitalize() for r in t.ranks()[:6]), t.species])
        row.update(
            inat21_filename=f"{im.uuid[:13]}.jpg",
            inat21_cls_name=cls_name,
            inat21_cls_num=str(im.species.index),
        )
    else:
        row.update(bioscan_part=str(1 + i % 2), bioscan_filename=f"BIOUG{i:05d}-{im.uuid[:4]}.jpg")
    return row


def _place(out: Path, row: dict, data: bytes, eol_set: list) -> None:
    if row["eol_content_id"]:
        eol_set.append((f"{row['treeoflife_id']}.jpg", data))
        return
    if row["inat21_filename"]:
        path = (
            out
            / "dataset"
            / "inat21"
            / "train"
            / f"{int(row['inat21_cls_num']):05d}_{row['inat21_cls_name']}"
            / row["inat21_filename"]
        )
    else:
        path = out / "dataset" / "bioscan" / f"part{row['bioscan_part']}" / row["bioscan_filename"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _image(jpeg: bytes, defect: str | None, rng: random.Random) -> bytes | None:
    """The file a defect leaves (None: no file at all)."""
    if defect in (None, "no_taxon", "no_source"):
        return jpeg
    if defect == "missing":
        return None
    if defect == "empty":
        return b""
    if defect == "corrupt":
        return bytes(rng.getrandbits(8) for _ in range(400))
    if defect == "truncated":
        return jpeg[: len(jpeg) // 2]
    if defect == "bomb":  # the frame header claims 65000 x 65000 pixels: refused before decoding
        at = jpeg.index(b"\xff\xc0") + 5
        return jpeg[:at] + (65000).to_bytes(2, "big") * 2 + jpeg[at + 4 :]
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    forms = {
        "rgba": ("RGBA", "PNG"),
        "palette": ("P", "PNG"),
        "cmyk": ("CMYK", "JPEG"),
        "gray": ("L", "JPEG"),
    }
    if defect == "large":
        image, forms["large"] = image.resize((1600, 1200)), ("RGB", "JPEG")
    mode, fmt = forms[defect]
    buf = io.BytesIO()
    image.convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
