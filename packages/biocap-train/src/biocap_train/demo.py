"""The no-argument demo: the toy tree of life, a tiny model, a short run on a laptop CPU.

``biocap-train`` without ``--train-data`` generates the toy data set once into
the cache folder (``$BIOCAP_CACHE``, else ``$XDG_CACHE_HOME/biocap``, else
``~/.cache/biocap``) and fills every option the user did not set from
:data:`DEMO`. Any flag still overrides it, e.g. ``biocap-train --steps 50``.
After training, ``<logs>/demo/latest`` points at the run's folder and the demo
prints the commands that evaluate and use its model, with its own paths.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import time
from pathlib import Path

from biocap_core.cache import cache_dir
from biocap_core.toy import ToyConfig, generate
from biocap_train.config import TrainConfig

TOY_VERSION = "toy-v4"
#: Demo settings: about a minute of training on 2 CPU cores (52.7% zero-shot top-1, 55.9% with seed
#: 1). With a text type drawn per step (six of them), 3e-3 ends far lower than 1e-3 after 1,024
#: steps (30.1%), and batches of 64 (512 steps in the same 16 epochs) reach 56.2%, within the
#: spread of seeds.
DEMO = {
    "model": "BioCAP-toy",
    "batch_size": 32,
    "epochs": 16,
    "lr": 1e-3,
    "warmup": 50,
    "precision": "fp32",
    "workers": 1,
    "shuffle_buffer": 1000,
    "log_every_n_steps": 32,
    "save_frequency": 0,
    "val_frequency": 8,
    "zeroshot_frequency": 4,
    "zeroshot_label_type": "taxon_com",
    "zeroshot_templates": 1,
    "keep_checkpoints": 1,
}


#: Under ``--logs``: the link to the newest demo run's folder.
LATEST = Path("demo") / "latest"


def toy_root(root: Path | None = None) -> Path:
    """Where the demo's toy tree of life is (or will be): ``toy-v4`` under the cache folder."""
    return (root or cache_dir()) / TOY_VERSION


def ensure_toy(root: Path | None = None, config: ToyConfig = ToyConfig()) -> Path:
    """The toy tree of life under the cache folder ``root``, generated with ``config``
    (atomically, as a folder) if absent."""
    target = toy_root(root)
    if (target / "manifest.json").is_file():
        return target
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    generate(staging, config)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_config(cfg: TrainConfig, user_set: set[str]) -> TrainConfig:
    """``cfg`` with the toy data and the demo settings wherever the user set nothing."""
    toy = ensure_toy()
    values = {
        **DEMO,
        "train_data": "::".join(str(p) for p in sorted((toy / "train").glob("shard-*.tar"))),
        "val_data": "::".join(str(p) for p in sorted((toy / "val").glob("shard-*.tar"))),
        "zeroshot_data": str(toy / "zeroshot" / "rare_species.csv"),
        "name": f"demo-{time.strftime('%Y%m%d-%H%M%S')}",
    }
    return dataclasses.replace(cfg, **{k: v for k, v in values.items() if k not in user_set})


def mark_latest(run_dir: Path) -> Path:
    """Point ``<logs>/demo/latest`` at ``run_dir``, so that paths written once through it stay
    valid after the next demo run (``logs/demo-*`` globs match every run). A relative symlink,
    swapped in atomically; where symlinks cannot be made, a text file holding the run folder."""
    link = run_dir.parent / LATEST
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(f".latest.tmp-{os.getpid()}")
    staged.unlink(missing_ok=True)
    try:
        staged.symlink_to(os.path.relpath(run_dir, link.parent), target_is_directory=True)
    except OSError:
        staged.write_text(f"{run_dir.resolve()}\n")
    os.replace(staged, link)
    return link


def next_commands(checkpoint: Path, model: str, toy: Path | None = None) -> list[str]:
    """The README's next steps for a demo checkpoint, with its paths: the toy benchmarks, a taxa
    index, predictions at every rank and the demo page (``uv run`` first when run through uv)."""
    toy = (toy or toy_root()).resolve()
    run = "uv run " if os.environ.get("UV") else ""
    weights = f"--model {shlex.quote(model)} --pretrained {shlex.quote(str(checkpoint))}"

    def at(*parts: str) -> str:
        return shlex.quote(str(toy.joinpath(*parts)))

    return [
        f"{run}biocap-eval run --data-root {shlex.quote(str(toy))} --benchmarks toy {weights}",
        (
            f"{run}biocap-predict index --out toy-index {weights} --taxa {at('catalog.parquet')} "
            f"--captions {at('retrieval', 'toy_retrieval.csv')}"
        ),
        (
            f"{run}biocap-predict predict {at('zeroshot', 'images')} --recursive --index toy-index "
            f"{weights} --rank all --k 3 --format table"
        ),
        f"{run}biocap-predict serve --index toy-index {weights} --port 0",
    ]
