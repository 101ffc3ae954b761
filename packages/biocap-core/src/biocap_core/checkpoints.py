"""The one place that reads and writes model weights.

Sources: OpenCLIP pretrained tags (``--pretrained openai``), ``hf-hub:`` and
``local-dir:`` names, local ``.safetensors``/``.pt``/``.pth``/``.bin`` files,
the original BioCAP training checkpoints (``state_dict`` with or without
``module.``, optimizer state ignored) and single-projector checkpoints
(OpenAI, BioCLIP, the released BioCAP), whose caption head starts as a copy
of ``visual.proj`` and ``logit_scale`` as in the original.

Nothing here unpickles code: safetensors, or ``torch.load(weights_only=True)``.
Keys that do not fit the model are an error listing them, never a silent
``strict=False``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import (
    download_pretrained,
    download_pretrained_from_hf,
    get_pretrained_cfg,
)
from safetensors.torch import load_file, save_file

from biocap_core.errors import CheckpointError
from biocap_core.fileio import atomic_write
from biocap_core.model import BioCAP, build_model, resolve_config

#: Keys a single-projector checkpoint lacks; filled from their taxonomic twins.
CAPTION_KEYS = {
    "visual.caption_proj": "visual.proj",
    "logit_scale_caption": "logit_scale",
    "logit_bias_caption": "logit_bias",
}
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
_DIR_WEIGHTS = (
    WEIGHTS_NAME,
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
#: Suffixes of the checkpoint files read here (a model name ending so is taken as a file).
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_MAX_LISTED = 20
#: How every ``torch.save`` file begins: a zip archive (the default since torch 1.6) or, in the
#: legacy format, the pickled magic number 0x1950a86a20f9469cfc6c.
_TORCH_SAVE_HEADERS = (b"PK\x03\x04", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19")


@dataclass
class LoadReport:
    """What a load did: the file, whether it was single-projector, and any training metadata."""

    source: str
    single_projector: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file into a dict without unpickling code.

    Returns ``{"state_dict": ..., **metadata}``: a plain state dict is wrapped,
    a training checkpoint (``epoch``, ``state_dict``, ``optimizer`` ...) is
    returned as it is.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix != ".safetensors" and not _is_torch_save_file(path):
        raise CheckpointError(
            f"{path}: not a checkpoint: it begins as no torch.save file does (zip or legacy"
            " format), and only files named .safetensors are read as safetensors"
        )
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to load: it is not a weights-only checkpoint (it would run pickled"
            " code). Convert it to safetensors with a trusted tool first. Detail:"
            f" {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # corrupt zip, truncated file, bad header ...
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if "state_dict" in obj:
        if not isinstance(obj["state_dict"], dict):
            raise CheckpointError(
                f"{path}: 'state_dict' is a {type(obj['state_dict']).__name__}, not a dict"
            )
        return obj
    return {"state_dict": obj}


def _is_torch_save_file(path: Path) -> bool:
    """Whether the file starts like a ``torch.save`` output, so that a failure of the weights-only
    unpickler on it means pickled objects that are not tensors, not bytes of some other kind."""
    with path.open("rb") as fh:
        head = fh.read(max(len(h) for h in _TORCH_SAVE_HEADERS))
    return head.startswith(_TORCH_SAVE_HEADERS)


def _strip_module(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix DDP adds (and ``_orig_mod.`` from torch.compile)."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def adapt_state_dict(
    model: BioCAP, state_dict: Mapping[str, Any], source: str = "<state_dict>"
) -> tuple[dict, bool]:
    """Make a state dict fit ``model`` exactly, or raise listing what does not fit.

    Returns the adapted dict and whether the caption head was filled in from a
    single-projector checkpoint.
    """
    non_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"{source}: entries that are not tensors: {non_tensors[:_MAX_LISTED]}"
        )
    sd = _strip_module(state_dict)
    filled = False
    for caption_key, tax_key in CAPTION_KEYS.items():
        if caption_key not in sd and tax_key in sd:
            sd[caption_key] = sd[tax_key].clone()
            filled = True
    expected = model.state_dict()
    for key in ("logit_scale", "logit_scale_caption", "logit_bias", "logit_bias_caption"):
        if key in sd and key in expected and sd[key].ndim != expected[key].ndim:
            sd[key] = sd[key].reshape(expected[key].shape)
    if "visual.positional_embedding" in sd and hasattr(model.visual, "positional_embedding"):
        resize_pos_embed(sd, model)
    if "positional_embedding" in sd:
        resize_text_pos_embed(sd, model)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:_MAX_LISTED]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:_MAX_LISTED]}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:_MAX_LISTED]}")
        raise CheckpointError(f"{source}: checkpoint does not fit the model; " + "; ".join(parts))
    return sd, filled


def load_weights(model: BioCAP, checkpoint: str | os.PathLike | Mapping[str, Any]) -> LoadReport:
    """Load a checkpoint file (or an in-memory state dict) into ``model``, strictly."""
    if isinstance(checkpoint, Mapping):
        ckpt = dict(checkpoint) if "state_dict" in checkpoint else {"state_dict": checkpoint}
        source = "<state_dict>"
    else:
        ckpt = read_checkpoint(checkpoint)
        source = str(checkpoint)
    sd, filled = adapt_state_dict(model, ckpt["state_dict"], source)
    model.load_state_dict(sd, strict=True)
    metadata = {k: v for k, v in ckpt.items() if k in ("epoch", "step", "name", "config")}
    return LoadReport(source=source, single_projector=filled, metadata=metadata)


def _find_weights(directory: Path) -> Path | None:
    for name in _DIR_WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    return None


def resolve_pretrained(
    model: str, pretrained: str | None = None, cache_dir: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], str | dict[str, Any] | None]:
    """Find the config, preprocessing config and weights for a model/pretrained pair.

    Downloads through OpenCLIP (Hugging Face Hub preferred, safetensors first) when
    the name or tag points at a hub. ``model`` may also be a checkpoint file that carries
    its model config (a biocap-train checkpoint's ``model_cfg``); its weights are then
    returned as the checkpoint already read, so the file is read once.
    """
    if Path(model).suffix in CHECKPOINT_SUFFIXES and Path(model).is_file():
        return _self_describing(model, pretrained)
    schema, identifier = open_clip.factory.parse_model_name(model)
    if schema is not None:
        if pretrained:
            raise ValueError(
                f"--pretrained {pretrained!r} cannot be combined with {model!r}, which names its"
                " weights"
            )
        if schema == "hf-hub":
            config_path = Path(
                download_pretrained_from_hf(identifier, filename=CONFIG_NAME, cache_dir=cache_dir)
            )
            weights = download_pretrained_from_hf(identifier, cache_dir=cache_dir)
        else:
            directory = Path(identifier)
            config_path = directory / CONFIG_NAME
            if not config_path.is_file():
                raise FileNotFoundError(f"{config_path}: missing (needed for {model!r})")
            found = _find_weights(directory)
            if found is None:
                raise FileNotFoundError(
                    f"{directory}: no weights file (looked for {list(_DIR_WEIGHTS)})"
                )
            weights = str(found)
        full = json.loads(config_path.read_text())
        return full.get("model_cfg", full), full.get("preprocess_cfg", {}), weights
    cfg = resolve_config(model)
    if not pretrained:
        return cfg, {}, None
    tag_cfg = get_pretrained_cfg(model, pretrained)
    if tag_cfg:
        preprocess = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }
        return cfg, preprocess, download_pretrained(tag_cfg, cache_dir=cache_dir)
    if Path(pretrained).is_file():
        return cfg, {}, pretrained
    raise ValueError(
        f"--pretrained {pretrained!r} is neither an OpenCLIP tag of {model!r} "
        f"({open_clip.list_pretrained_tags_by_model(model)}) nor an existing file"
    )


def _self_describing(
    path: str, pretrained: str | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A checkpoint given as the model: its config, no preprocessing override, and its contents."""
    if pretrained:
        raise ValueError(
            f"--pretrained {pretrained!r} cannot be combined with the checkpoint {path!r}, "
            "which holds its weights"
        )
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.get("model_cfg"), Mapping):
        raise CheckpointError(
            f"{path}: holds no model config ('model_cfg', as biocap-train writes); pass its "
            "architecture as the model and the file as pretrained (--model ViT-B-16 "
            f"--pretrained {path})"
        )
    return resolve_config(ckpt["model_cfg"]), {}, ckpt


def load_model(
    model: str | Mapping[str, Any] = "ViT-B-16",
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> BioCAP:
    """Build a BioCAP and load its weights from any supported source.

    Examples: ``load_model("hf-hub:imageomics/biocap")``,
    ``load_model("ViT-B-16", "openai")``, ``load_model("ViT-B-16", "ckpt/epoch_50.pt")``,
    ``load_model("logs/run/checkpoints/step_00001024.pt")`` (a biocap-train checkpoint carries its
    config), ``load_model("local-dir:exported/")``, ``load_model(config_dict)`` (random init).
    """
    if isinstance(model, Mapping):
        cfg, preprocess, weights = resolve_config(model), {}, pretrained
    else:
        cfg, preprocess, weights = resolve_pretrained(model, pretrained, cache_dir)
    # Built at its precision, as build_model(precision=...) builds it (fp16/bf16 norms are
    # LayerNormFp32 only when built so); loading copies the weights into the cast parameters.
    net = build_model(cfg, precision=precision)
    net.preprocess_cfg = dict(preprocess)
    if weights:
        net.load_report = load_weights(net, weights)
    return net.to(device)


def save_weights(model: BioCAP, path: str | os.PathLike) -> Path:
    """Save both heads as safetensors (atomically)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in _strip_module(model.state_dict()).items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    return path


def single_projector_state_dict(model: BioCAP, head: str = "tax") -> dict[str, torch.Tensor]:
    """A plain OpenCLIP state dict whose ``visual.proj``/``logit_scale`` come from ``head``."""
    sd = {
        k: v.detach().clone().contiguous().cpu()
        for k, v in _strip_module(model.state_dict()).items()
    }
    if head == "caption":
        for caption_key, tax_key in CAPTION_KEYS.items():
            if caption_key in sd:
                sd[tax_key] = sd[caption_key]
    elif head != "tax":
        raise ValueError(f"unknown head {head!r}; expected 'tax' or 'caption'")
    for caption_key in CAPTION_KEYS:
        sd.pop(caption_key, None)
    return sd


def export_open_clip(model: BioCAP, out_dir: str | os.PathLike, head: str = "tax") -> Path:
    """Write a plain single-projector OpenCLIP model folder (config + safetensors).

    The folder loads with stock OpenCLIP: ``open_clip.create_model("local-dir:OUT")``,
    and can be pushed to the Hugging Face Hub as it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model.model_cfg, "preprocess_cfg": preprocess_dict(model)}
    sd = single_projector_state_dict(model, head)
    atomic_write(
        out / WEIGHTS_NAME, lambda tmp: save_file(sd, str(tmp), metadata={"biocap_head": head})
    )
    atomic_write(out / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    return out


def preprocess_dict(model: BioCAP) -> dict[str, Any]:
    """The OpenCLIP preprocess config of a model (image size, mean, std, ...)."""
    from biocap_core.preprocess import preprocess_cfg

    cfg = preprocess_cfg(model)
    return {
        "size": cfg.size,
        "mode": cfg.mode,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "interpolation": cfg.interpolation,
        "resize_mode": cfg.resize_mode,
    }
