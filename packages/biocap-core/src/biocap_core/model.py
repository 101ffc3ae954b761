"""The BioCAP model: an OpenCLIP ``CLIP`` with a second visual projection and temperature.

BioCAP trains one backbone against two kinds of text. Taxonomic names go
through ``visual.proj`` with ``logit_scale``; trait captions go through
``visual.caption_proj`` (same shape) with ``logit_scale_caption``. Everything
else (towers, tokenizer, configs) is OpenCLIP's own: we subclass ``CLIP`` and
never vendor it.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from biocap_core.precision import set_precision, weight_dtype

Head = Literal["tax", "caption"]
HEADS: tuple[str, ...] = ("tax", "caption")
MAX_LOGIT_SCALE = math.log(100.0)

#: OpenCLIP CLIP constructor arguments that may appear in a model config.
_CLIP_ARGS = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "init_logit_scale",
    "init_logit_bias",
    "nonscalar_logit_scale",
}


class BioCAP(open_clip.CLIP):
    """OpenCLIP ``CLIP`` plus ``visual.caption_proj`` and ``logit_scale_caption``.

    ``encode_image(x, head=...)`` picks the projector; ``forward`` returns a dict
    with both image embeddings (or the requested ones), the text embedding and
    both exponentiated temperatures.
    """

    def __init__(self, embed_dim: int, vision_cfg: Mapping, text_cfg: Mapping, **kwargs: Any):
        kwargs.pop("output_dict", None)
        super().__init__(embed_dim, dict(vision_cfg), dict(text_cfg), output_dict=True, **kwargs)
        proj = getattr(self.visual, "proj", None)
        if not isinstance(proj, nn.Parameter):
            raise ValueError(
                "BioCAP needs a vision tower with a linear projection `visual.proj` (OpenCLIP"
                f" ViT); {type(self.visual).__name__} has none"
            )
        self.visual.caption_proj = nn.Parameter(proj.shape[0] ** -0.5 * torch.randn_like(proj))
        self.logit_scale_caption = nn.Parameter(self.logit_scale.detach().clone())
        self.logit_bias_caption = (
            nn.Parameter(self.logit_bias.detach().clone()) if self.logit_bias is not None else None
        )
        self.model_cfg: dict[str, Any] = {
            "embed_dim": embed_dim,
            "vision_cfg": dict(vision_cfg),
            "text_cfg": dict(text_cfg),
            **kwargs,
        }
        self.model_cfg.pop("cast_dtype", None)
        self.preprocess_cfg: dict[str, Any] = {}
        self.load_report = None  # set by biocap_core.checkpoints when weights are loaded
        set_causal_text_attention(self, True)

    # ---- image side ----
    def _projection(self, head: str) -> torch.Tensor:
        if head == "tax":
            return self.visual.proj
        if head == "caption":
            return self.visual.caption_proj
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")

    def encode_image_heads(
        self, image: torch.Tensor, heads: Iterable[str] = HEADS, normalize: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run the backbone once and project with each requested head."""
        heads = tuple(dict.fromkeys(heads))
        if heads == ("tax",):
            feats = [self.visual(image)]
        else:
            # Swap the tower's projection for the concatenated heads for this call only, so
            # the backbone runs once whatever OpenCLIP does inside VisionTransformer.forward.
            stacked = torch.cat([self._projection(h) for h in heads], dim=1)
            out = functional_call(self.visual, {"proj": stacked}, (image,))
            feats = out.split(self.visual.proj.shape[1], dim=-1)
        return {h: F.normalize(f, dim=-1) if normalize else f for h, f in zip(heads, feats)}

    def encode_image(
        self, image: torch.Tensor, normalize: bool = False, head: str = "tax"
    ) -> torch.Tensor:
        return self.encode_image_heads(image, (head,), normalize=normalize)[head]

    def logit_scale_of(self, head: str) -> nn.Parameter:
        return self.logit_scale if head == "tax" else self.logit_scale_caption

    def forward(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        heads: Iterable[str] = HEADS,
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if image is not None:
            for head, feats in self.encode_image_heads(image, heads, normalize=True).items():
                out[f"image_features_{head}"] = feats
        if text is not None:
            out["text_features"] = self.encode_text(text, normalize=True)
        out["logit_scale"] = self.logit_scale.exp()
        out["logit_scale_caption"] = self.logit_scale_caption.exp()
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
            out["logit_bias_caption"] = self.logit_bias_caption
        return out

    @torch.no_grad()
    def clamp_logit_scales(self) -> None:
        """Clamp both temperatures to [0, ln 100], as after every optimiser step."""
        self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        self.logit_scale_caption.clamp_(0, MAX_LOGIT_SCALE)

    def tokenizer(self):
        """The OpenCLIP tokenizer this text tower was built for."""
        text_cfg = self.model_cfg["text_cfg"]
        if text_cfg.get("hf_tokenizer_name"):
            return open_clip.HFTokenizer(
                text_cfg["hf_tokenizer_name"],
                context_length=self.context_length,
                **text_cfg.get("tokenizer_kwargs", {}),
            )
        return open_clip.SimpleTokenizer(context_length=self.context_length)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the vision tower expects."""
        size = self.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)


class _CausalHintAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` told that the mask it is given is the causal one.

    OpenCLIP's text blocks pass the causal mask as a float tensor, and SDPA's flash kernel takes
    no explicit mask. With ``is_causal`` (and no weights asked for) PyTorch's attention drops the
    tensor and lets the kernel mask (``F.multi_head_attention_forward``), so the text tower can
    use the flash and memory-efficient kernels. The mask is still passed: MHA requires one with
    ``is_causal``, and its inference fast path uses it."""

    def forward(self, *args, **kwargs):
        kwargs.setdefault("is_causal", kwargs.get("attn_mask") is not None)
        return super().forward(*args, **kwargs)


def set_causal_text_attention(model: BioCAP, enabled: bool = True) -> None:
    """Give the text tower's causal mask to SDPA as ``is_causal`` (the default of every BioCAP),
    or with ``enabled=False`` as OpenCLIP passes it (the baseline of
    benchmarks/train_throughput.py). A text tower without the standard causal mask
    (``no_causal_mask``) is left as it is."""
    mask = model.attn_mask
    if mask is None or not torch.equal(mask, torch.full_like(mask, float("-inf")).triu(1)):
        return
    for block in model.transformer.resblocks:
        if isinstance(block.attn, nn.MultiheadAttention):
            # a class swap, not a new module: the same parameters, state-dict keys and hooks
            block.attn.__class__ = _CausalHintAttention if enabled else nn.MultiheadAttention


#: The toolkit's own architectures (``BioCAP-toy``): one JSON file each, named like OpenCLIP's.
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def toolkit_models() -> list[str]:
    """Names of the toolkit's own model configs, usable wherever an OpenCLIP name is."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def resolve_config(arch: str | Mapping[str, Any]) -> dict[str, Any]:
    """An OpenCLIP model config from a toolkit or OpenCLIP name, ``hf-hub:``/``local-dir:`` name,
    JSON file or dict.

    Toolkit names are looked up here rather than registered into OpenCLIP's global registry, so
    no import has side effects and every app resolves the same names.
    """
    own = MODEL_CONFIG_DIR / f"{arch}.json" if isinstance(arch, str) else None
    if isinstance(arch, Mapping):
        cfg = copy.deepcopy(dict(arch))
    elif own is not None and own.is_file():
        cfg = json.loads(own.read_text())
    elif str(arch).endswith(".json") and Path(arch).is_file():
        cfg = json.loads(Path(arch).read_text())
    else:
        cfg = open_clip.get_model_config(str(arch))
        if cfg is None:
            raise ValueError(
                f"unknown model {arch!r}: not a toolkit model ({', '.join(toolkit_models())}), an"
                " OpenCLIP architecture (see open_clip.list_models()), hf-hub:/local-dir: name or"
                " JSON config file"
            )
    cfg = cfg.get("model_cfg", cfg)
    if "hf_model_name" in cfg.get("text_cfg", {}) or cfg.get("custom_text"):
        raise ValueError(
            f"model {arch!r} uses a Hugging Face text tower (OpenCLIP CustomTextCLIP); "
            "BioCAP supports OpenCLIP CLIP text towers only"
        )
    unknown = set(cfg) - _CLIP_ARGS - {"custom_text"}
    if unknown:
        raise ValueError(f"model config of {arch!r} has unsupported keys {sorted(unknown)}")
    return cfg


def build_model(
    arch: str | Mapping[str, Any],
    *,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> BioCAP:
    """A randomly initialised BioCAP of any OpenCLIP CLIP architecture.

    ``overrides`` are merged into the config (``vision_cfg``/``text_cfg`` dicts are
    merged key by key, unlike the original's shallow replace). ``precision`` is applied while
    building (see :func:`biocap_core.precision.weight_dtype`), so every route to a model of a
    precision gives the same modules.
    """
    cfg = resolve_config(arch)
    for key, value in overrides.items():
        if key in ("vision_cfg", "text_cfg"):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    cfg.pop("custom_text", None)
    model = BioCAP(**cfg, cast_dtype=weight_dtype(precision))
    return set_precision(model.to(device), precision)
