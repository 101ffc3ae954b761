"""The whole toy tree of life on disk: :class:`ToyConfig` and :func:`generate`.

Training and validation shards in the TreeOfLife-10M layout (written by
:mod:`biocap_core.shards`, like every shard), the catalog, every evaluation set
and a manifest, all from one seed, so the same config gives byte-identical files.
"""

from __future__ import annotations

import json
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
from biocap_core.toy.render import ToyImage, images
from biocap_core.toy.species import make_species


def _shard_sample(image: ToyImage) -> dict[str, object]:
    """A sample with the TreeOfLife-10M members (``taxonTag.txt`` spelled as in the original)."""
    sample: dict[str, object] = {"__key__": image.uuid, "jpg": image.jpeg}
    for key, text in tol_texts(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    for key, text in tol_names(image.species.taxon).items():
        sample[f"{key}.txt"] = text
    sample["caption.txt"] = image.species.trait_caption()
    return sample


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy tree of life; the defaults train a tiny model to a clear zero-shot gain in
    minutes."""

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
                catalog.append(
                    {
                        "uuid": im.uuid,
                        **{r: t.rank(r) for r in RANKS},
                        "common_name": t.common_name,
                        "split": split,
                        "shard": f"shard-{i // config.shard_size:06d}.tar",
                    }
                )
                yield _shard_sample(im)

        progress = tqdm(samples(), desc=f"toy {split} shards", unit="img", leave=False)
        write_shards(progress, out / split, config.shard_size)
    schemas.write_parquet_atomic(schemas.CATALOG.frame(catalog), out / "catalog.parquet")
    eval_images = list(
        images(species, config.eval_per_species, config.seed, "eval", config.image_size)
    )
    write_classification(eval_images, out / "zeroshot")
    retrieval_images = list(images(species, 2, config.seed, "retrieval", config.image_size))
    write_retrieval(retrieval_images, out / "retrieval")
    pool = list(images(species, 8, config.seed, "inquire", config.image_size))
    write_inquire(
        pool, out / "inquire", config.inquire_queries, config.inquire_candidates, config.seed
    )
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
