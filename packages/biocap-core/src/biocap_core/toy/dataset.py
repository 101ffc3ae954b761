"""The whole toy tree of life on disk: :class:`ToyConfig` and :func:`generate`.

Training and validation shards in the TreeOfLife-10M layout (written by
:mod:`biocap_core.shards`, like every shard) with one caption per image and the species mixed
across shards, the catalog,
every evaluation set, a table of each image's true attributes and a manifest, all from
one seed, so the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from biocap_core import schemas
from biocap_core.fileio import atomic_write
from biocap_core.shards import write_shards
from biocap_core.taxonomy import RANKS, tol_names, tol_texts
from biocap_core.toy.benchmarks import (
    write_classification,
    write_format_examples,
    write_inquire,
    write_retrieval,
    write_wiki,
)
from biocap_core.toy.captions import caption, noisy_phrases
from biocap_core.toy.render import ToyImage, images
from biocap_core.toy.species import ToySpecies, make_species


def _shard_sample(image: ToyImage, caption_text: str) -> dict[str, object]:
    """A sample with the TreeOfLife-10M members (``taxonTag.txt`` spelled as in the original) and
    the image's caption."""
    sample: dict[str, object] = {"__key__": image.uuid, "jpg": image.jpeg}
    for key, text in tol_texts(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    for key, text in tol_names(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    sample["caption.txt"] = caption_text
    return sample


def _attributes(
    image: ToyImage, split: str, text: str | None = None, errors: int | None = None
) -> dict:
    """A row of ``attributes.parquet``: what the generator drew for one image."""
    sp = image.species
    return {
        "uuid": image.uuid,
        "split": split,
        "scientific_name": sp.scientific,
        "plan": sp.plan,
        "colour": sp.colour,
        "shape": sp.shape,
        "pattern": sp.pattern,
        "pattern_colour": sp.pattern_colour,
        "marks": sp.marks,
        "life_stage": image.stage,
        "background": image.background,
        "tilt": image.tilt,
        "caption": text,
        "caption_errors": errors,
    }


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy tree of life; the defaults train a tiny model to a clear zero-shot gain in
    minutes.

    ``caption_noise`` is the share of trait phrases in the training and validation captions that
    are wrong or missing (exactly that share per split, rounded to a whole phrase).
    """

    species: int = 64
    images_per_species: int = 32
    val_per_species: int = 4
    eval_per_species: int = 4
    inquire_queries: int = 24
    inquire_candidates: int = 100
    image_size: int = 64
    shard_size: int = 256
    seed: int = 0
    caption_noise: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.caption_noise <= 1.0:
            raise ValueError(f"caption_noise must be between 0 and 1, not {self.caption_noise}")


def _write_split(
    out: Path,
    species: list[ToySpecies],
    split: str,
    per: int,
    config: ToyConfig,
    catalog: list[dict],
    attributes: list[dict],
) -> None:
    """Shards of one split, each image with its own caption; its catalog and attribute rows."""
    noise_rng = random.Random(f"{config.seed}/{split}/caption-noise")
    noisy = noisy_phrases(len(species) * per, config.caption_noise, noise_rng)

    def samples():
        for i, im in enumerate(
            images(species, per, config.seed, split, config.image_size, shuffle=True)
        ):
            t = im.species.taxon
            text = caption(im, config.seed, split, i, noisy.get(i, ()))
            catalog.append(
                {
                    "uuid": im.uuid,
                    **{r: t.rank(r) for r in RANKS},
                    "common_name": t.common_name,
                    "split": split,
                    "shard": f"shard-{i // config.shard_size:06d}.tar",
                }
            )
            attributes.append(_attributes(im, split, text, len(noisy.get(i, ()))))
            yield _shard_sample(im, text)

    progress = tqdm(samples(), desc=f"toy {split} shards", unit="img", leave=False)
    write_shards(progress, out / split, config.shard_size)


def generate(out: str | Path, config: ToyConfig = ToyConfig()) -> dict[str, object]:
    """Write the whole toy tree of life under ``out`` and return its manifest.

    Layout: ``train/`` and ``val/`` shards with ``sizes.json``; ``catalog.parquet``;
    ``zeroshot/`` (camera-trap, asis and rare-species CSVs over ``images/``);
    ``retrieval/`` (``toy_retrieval.csv`` + ``images/{id}.jpg``); ``inquire/``
    (``queries.csv``, ``rerank.parquet``, ``images/``); ``wiki/`` (species
    CSV, ``wiki_descriptions.parquet``); ``format_examples.parquet``;
    ``attributes.parquet`` (every image's species traits, life stage, background, tilt,
    and its caption with how many trait phrases are wrong or missing); ``manifest.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    species = make_species(config.species, config.seed)
    catalog, attributes = [], []
    for split, per in (("train", config.images_per_species), ("val", config.val_per_species)):
        _write_split(out, species, split, per, config, catalog, attributes)
    schemas.write_parquet_atomic(schemas.CATALOG.frame(catalog), out / "catalog.parquet")
    eval_images = list(
        images(species, config.eval_per_species, config.seed, "eval", config.image_size)
    )
    write_classification(eval_images, out / "zeroshot")
    retrieval_images = list(images(species, 2, config.seed, "retrieval", config.image_size))
    retrieval_captions = [  # "<species>, <caption>", as in the real retrieval tables
        f"{im.species.scientific}, " + caption(im, config.seed, "retrieval", i, name=False)
        for i, im in enumerate(retrieval_images)
    ]
    write_retrieval(retrieval_images, retrieval_captions, out / "retrieval")
    pool = list(images(species, 8, config.seed, "inquire", config.image_size))
    write_inquire(
        pool, out / "inquire", config.inquire_queries, config.inquire_candidates, config.seed
    )
    attributes += [_attributes(im, "eval") for im in eval_images]
    attributes += [
        _attributes(im, "retrieval", text, 0)
        for im, text in zip(retrieval_images, retrieval_captions, strict=True)
    ]
    attributes += [_attributes(im, "inquire") for im in pool]
    attributes_table = schemas.TOY_ATTRIBUTES.frame(attributes)
    schemas.write_parquet_atomic(attributes_table, out / "attributes.parquet")
    (out / "wiki").mkdir(exist_ok=True)
    write_wiki(species, out / "wiki")
    write_format_examples(species, out)
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
