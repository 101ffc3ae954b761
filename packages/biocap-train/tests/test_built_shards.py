"""Training on shards that ``biocap-core shards`` built, from the TreeOfLife-10M download's layout
and from a catalog of one's own photos: the epoch comes from the builder's ``sizes.json`` files."""

from __future__ import annotations

import math

import polars as pl
from biocap_core.shard_builder import BuildOptions, ImagePolicy, Inputs, build
from biocap_core.shards import read_sizes
from biocap_core.taxonomy import RANKS
from biocap_core.toy import ToyConfig, write_download
from biocap_train.config import TrainConfig
from biocap_train.trainer import train


def pattern(split_dir) -> str:
    return str(split_dir / f"shard-{{000000..{len(read_sizes(split_dir)) - 1:06d}}}.tar")


def test_training_reads_shards_built_from_the_download_and_from_own_photos(base_args, tmp_path):
    root = tmp_path / "download"
    write_download(
        root, ToyConfig(species=8, images_per_species=4, val_per_species=1, image_size=40)
    )
    captions = root / "captions" / "uuid_caption_description.parquet"
    options = BuildOptions(policy=ImagePolicy(size=32), shard_size=8, progress=False)
    dataset = root / "dataset"
    tol = Inputs(
        catalog=root / "metadata" / "catalog.csv",
        eol=dataset / "eol",
        inat21=dataset / "inat21" / "train",
        bioscan=dataset / "bioscan",
        captions=captions,
    )
    assert build(tol, tmp_path / "tol", options).complete
    mine = (
        pl.read_csv(root / "metadata" / "catalog.csv", infer_schema=False)
        .filter((pl.col("bioscan_filename") != "") & (pl.col("split") == "train"))
        .with_columns(
            image_path=pl.concat_str(
                pl.lit("dataset/bioscan/part"), "bioscan_part", pl.lit("/"), "bioscan_filename"
            )
        )
        .select("treeoflife_id", "image_path", *RANKS, "common")
    )
    mine.write_csv(root / "my_photos.csv")
    own = Inputs(catalog=root / "my_photos.csv", key_column="treeoflife_id", captions=captions)
    assert build(own, tmp_path / "own", options).complete
    samples = sum(sum(read_sizes(tmp_path / d / "train").values()) for d in ("tol", "own"))
    data = f"{pattern(tmp_path / 'tol' / 'train')}::{pattern(tmp_path / 'own' / 'train')}"
    args = {
        **base_args,
        "train_data": data,
        "train_num_samples": None,
        "epochs": 1,
        "batch_size": 8,
    }
    result = train(TrainConfig(**args))
    assert result.step == math.ceil(samples / 8) and result.checkpoint is not None
