"""The training configuration: one dataclass behind the CLI flags, the config file and the Python
API.

Flag names are OpenCLIP's wherever OpenCLIP has the option (``--train-data``,
``--batch-size``, ``--precision`` ...), so an OpenCLIP or original-BioCAP
command line keeps working. A TOML or YAML file (``--config``) sets any field;
flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biocap_core.precision import PRECISIONS
from biocap_core.taxonomy import LABEL_TYPES, TRAIN_TAXONOMIC_TYPES
from biocap_train.loss import PROJECTORS

TEXT_TYPES: tuple[str, ...] = ("random",) + TRAIN_TAXONOMIC_TYPES + ("caption",)
#: Core's precisions but pure fp16: it has no loss scaler (``amp`` has one), so small fp16 gradients
#: underflow to zero.
TRAIN_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")
#: Where captions go (``--caption-head``): their own image projector, or the taxonomic one; the
#: names of the loss's projector maps.
CAPTION_HEADS = tuple(PROJECTORS)
#: torch.compile modes (``--torchcompile-mode``); "max-autotune" benchmarks kernels at start-up.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _f(
    default: Any = None,
    help: str = "",
    choices: Sequence[str] | None = None,
    aliases: tuple[str, ...] = (),
    bool_negatable: bool = False,
) -> Any:
    """A dataclass field carrying its CLI help."""
    meta = {"help": help, "choices": choices, "aliases": aliases, "negatable": bool_negatable}
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every knob of a biocap-train run. Defaults are OpenCLIP's unless noted."""

    # ---- data ----
    train_data: str | None = _f(
        None,
        "Training shards: brace patterns, several sources joined with '::' "
        "(e.g. 'tol/shard-{000000..000159}.tar::extra/shard-{0..9}.tar'). "
        "Not given: the toy demo.",
    )
    train_data_upsampling_factors: str | None = _f(
        None, "Per-source weights for '::' sources, e.g. '1::2' (needs --dataset-resampled)."
    )
    val_data: str | None = _f(
        None, "Validation shards (taxonomic and caption loss every --val-frequency epochs)."
    )
    dataset_resampled: bool = _f(
        False, "Draw shards with replacement (infinite stream, virtual epochs)."
    )
    train_num_samples: int | None = _f(
        None, "Samples per epoch; default: sum of sizes.json beside the shards."
    )
    shuffle_buffer: int = _f(
        5000,
        "Sample shuffle buffer per data stream (OpenCLIP's size; capped at "
        "half of what one stream yields per epoch).",
    )
    text_type: str = _f(
        "random",
        "Text supervising each step: 'random' draws one per step (caption with "
        "--caption-share, else a taxonomic type), or a fixed type.",
        TEXT_TYPES,
    )
    caption_share: float = _f(
        1 / 6,
        "Share of steps that train the caption head with --text-type random "
        "(the original: 1 in 6).",
    )
    joint_loss: bool = _f(
        False,
        "Train both heads every step: taxonomic loss + --caption-loss-weight x "
        "caption loss (instead of one head per step).",
    )
    caption_loss_weight: float = _f(1.0, "Weight of the caption loss with --joint-loss.")
    caption_head: str = _f(
        "separate",
        "Image projector that captions train: 'separate' (BioCAP: visual.caption_proj and its "
        "own temperature) or 'shared' (visual.proj and logit_scale, as the names: BioCLIP plus "
        "captions; the caption head is left untouched).",
        CAPTION_HEADS,
    )
    captions: str | None = _f(
        None,
        "Parquet table (uuid, caption) giving captions by sample key, instead of "
        "caption.txt inside the shards.",
    )
    draft_decode: bool = _f(
        True,
        "Decode large JPEGs at reduced size (PIL draft) when the crop is smaller.",
        bool_negatable=True,
    )
    gpu_decode: bool = _f(
        False,
        "Decode, crop and normalise JPEGs on the GPU (nvJPEG), batched; the data "
        "workers only read bytes. Needs CUDA.",
    )
    # ---- model ----
    model: str = _f(
        "ViT-B-16", "OpenCLIP architecture name, hf-hub:/local-dir: name or JSON config file."
    )
    pretrained: str | None = _f(
        None,
        "Initial weights: an OpenCLIP tag (openai), an hf-hub: name or a "
        "checkpoint file (single-projector weights fill the caption head).",
    )
    # ---- optimisation ----
    batch_size: int = _f(64, "Batch size per process.")
    epochs: int = _f(32, "Epochs (of --train-num-samples samples).")
    steps: int | None = _f(
        None, "Stop after this many optimiser steps (overrides --epochs' total)."
    )
    lr: float = _f(5e-4, "Peak learning rate.")
    warmup: int = _f(10000, "Linear warm-up steps.")
    lr_scheduler: str = _f("cosine", "Learning-rate schedule after warm-up.", ("cosine", "const"))
    wd: float = _f(0.2, "AdamW weight decay (not on gains, biases, norms and logit scales).")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.98, "AdamW beta2.")
    eps: float = _f(1e-6, "AdamW epsilon.")
    fused_adamw: bool = _f(
        True,
        "AdamW's fused kernel on CPU and CUDA (the same update up to rounding; "
        "--no-fused-adamw: PyTorch's default loop).",
        bool_negatable=True,
    )
    grad_clip_norm: float | None = _f(None, "Clip the gradient norm to this value.")
    precision: str = _f(
        "amp",
        "Numeric precision (amp: fp16 autocast with loss scaling; bf16: pure bf16 weights).",
        TRAIN_PRECISIONS,
    )
    grad_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    accum_freq: int = _f(
        1,
        "Micro-batches per optimiser step (features cached so the loss sees the whole "
        "accumulated batch, as OpenCLIP).",
    )
    torchcompile: bool = _f(False, "torch.compile the model.")
    torchcompile_mode: str = _f("default", "torch.compile mode with --torchcompile.", COMPILE_MODES)
    local_loss: bool = _f(
        True, "Each rank scores its own samples against all gathered features.", bool_negatable=True
    )
    gather_with_grad: bool = _f(
        True,
        "All-gather features with gradient (the scalable, exact setting).",
        bool_negatable=True,
    )
    # ---- runtime ----
    workers: int = _f(4, "Data-loading processes per rank.")
    device: str | None = _f(None, "Device; default cuda:LOCAL_RANK if CUDA is available, else cpu.")
    seed: int = _f(0, "Seed of model init, data order, augmentation and the per-step text type.")
    # ---- checkpoints ----
    logs: str = _f(
        "./logs",
        "Root folder of runs. Under torchrun write --logs-dir: torchrun's own parser "
        "takes --logs for an abbreviation of its --logs-specs.",
        aliases=("--logs-dir",),
    )
    name: str | None = _f(None, "Run name (folder under --logs); default: date-model-lr-batch.")
    resume: str | None = _f(
        None, "'latest' (newest checkpoint of this run, if any) or a checkpoint path."
    )
    save_frequency: int = _f(
        1, "Save every this many epochs (0: only --save-every-n-steps and the end)."
    )
    save_every_n_steps: int | None = _f(None, "Also save every this many steps.")
    keep_checkpoints: int = _f(3, "Keep the newest K step checkpoints (0 keeps all).")
    # ---- evaluation and logging ----
    val_frequency: int = _f(1, "Validate every this many epochs.")
    zeroshot_data: str | None = _f(
        None, "Zero-shot classification CSV (any of the original's layouts)."
    )
    zeroshot_images: str | None = _f(
        None, "Image root of --zeroshot-data; default: the CSV's folder."
    )
    zeroshot_label_type: str = _f("taxon_com", "Label text type of --zeroshot-data.", LABEL_TYPES)
    zeroshot_frequency: int = _f(
        1, "Zero-shot top-1 every this many epochs (also before and after training)."
    )
    zeroshot_templates: int = _f(81, "Use the first N of the 81 zero-shot templates.")
    log_every_n_steps: int = _f(100, "Log (console, JSONL, TensorBoard, W&B) every N steps.")
    report_to: str = _f("", "Also log to 'tensorboard', 'wandb' or 'tensorboard,wandb'.")
    wandb_project_name: str = _f("biocap", "W&B project.")
    progress: bool = _f(True, "Show the progress bar (on a terminal).", bool_negatable=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.logs) / str(self.name)

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        problems = []
        if self.text_type not in TEXT_TYPES:
            problems.append(f"--text-type {self.text_type!r}: expected one of {TEXT_TYPES}")
        if self.precision not in TRAIN_PRECISIONS:
            problems.append(f"--precision {self.precision!r}: expected one of {TRAIN_PRECISIONS}")
        if self.torchcompile_mode not in COMPILE_MODES:
            problems.append(
                f"--torchcompile-mode {self.torchcompile_mode!r}: expected one of {COMPILE_MODES}"
            )
        if self.caption_head not in CAPTION_HEADS:
            problems.append(
                f"--caption-head {self.caption_head!r}: expected one of {CAPTION_HEADS}"
            )
        if not 0.0 <= self.caption_share <= 1.0:
            problems.append(f"--caption-share {self.caption_share}: must lie in [0, 1]")
        for name in (
            "batch_size",
            "accum_freq",
            "epochs",
            "shuffle_buffer",
            "log_every_n_steps",
            "zeroshot_templates",
        ):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.workers < 0:
            problems.append(f"--workers {self.workers}: must be >= 0")
        if self.steps is not None and self.steps < 1:
            problems.append(f"--steps {self.steps}: must be >= 1")
        if self.train_data_upsampling_factors and not self.dataset_resampled:
            problems.append("--train-data-upsampling-factors needs --dataset-resampled")
        if self.joint_loss and self.text_type == "caption":
            problems.append(
                "--joint-loss trains the caption head every step already; give a taxonomic "
                "--text-type or 'random'"
            )
        unknown = {r.strip() for r in self.report_to.split(",") if r.strip()} - {
            "tensorboard",
            "wandb",
        }
        if unknown:
            problems.append(
                f"--report-to {self.report_to!r}: unknown {sorted(unknown)}; use tensorboard, wandb"
            )
        if problems:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config; keys are field names, with '-' or '_'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"--config {path}: expected a .toml, .yaml/.yml or .json file")
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path}: expected a table of options, found {type(data).__name__}"
        )
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or name == "config":
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise ValueError(f"--config {path}: unknown option {key!r}{hint}")
        out[name] = value
    return out


def _type_of(f: dataclasses.Field):
    hint = str(f.type)
    if "bool" in hint:
        return bool
    if "int" in hint:
        return int
    if "float" in hint:
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biocap-train",
        description=(
            "Train BioCAP (one backbone, a taxonomic and a caption head) on TreeOfLife-style"
            " shards. With no arguments: a 1-minute CPU demo on the toy tree of life."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config", help="TOML or YAML file of options (flags given here override it)."
    )
    for f in dataclasses.fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kind = _type_of(f)
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "help": f.metadata.get("help", ""),
            "default": argparse.SUPPRESS,
        }
        if kind is bool:
            kwargs["action"] = (
                argparse.BooleanOptionalAction
                if f.metadata.get("negatable") or f.default
                else "store_true"
            )
        else:
            kwargs["type"] = kind
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(*flags, **kwargs)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, set[str]]:
    """Config from defaults < config file < flags; also returns the names the user set."""
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    values = read_config_file(config_path) if config_path else {}
    values.update(args)
    return TrainConfig(**values), set(values)
