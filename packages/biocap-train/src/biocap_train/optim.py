"""AdamW with the original's weight-decay exclusions."""

from __future__ import annotations

import torch
from torch import nn


def excluded_from_decay(name: str, param: nn.Parameter) -> bool:
    """OpenCLIP's rule, kept by BioCAP: no decay for ndim < 2 or names with bn/ln/bias/logit_scale
    (so ``visual.caption_proj`` *is* decayed, ``logit_scale_caption`` is not)."""
    return param.ndim < 2 or any(tag in name for tag in ("bn", "ln", "bias", "logit_scale"))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if excluded_from_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not excluded_from_decay(n, p)], "weight_decay": weight_decay},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   eps: float) -> torch.optim.AdamW:
    """AdamW over all trainable parameters. Parameters whose grad is None on a step (the head
    that step does not train) are skipped by AdamW: neither moved nor decayed, as in the original.
    The fused kernel (CPU and CUDA) is several times faster than the per-tensor loop on small models."""
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=device in ("cpu", "cuda"))
