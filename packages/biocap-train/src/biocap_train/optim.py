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
        {
            "params": [p for n, p in named if not excluded_from_decay(n, p)],
            "weight_decay": weight_decay,
        },
    ]


#: Devices with PyTorch's fused AdamW kernel; elsewhere AdamW runs its default implementation.
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over all trainable parameters. Parameters whose grad is None on a step (the head
    that step does not train) are skipped by AdamW: neither moved nor decayed, as in the original.

    ``fused``: one fused kernel for all parameters (several times faster than the per-tensor loop
    on small models; the same update up to float rounding) where the device has it; False keeps
    PyTorch's default (the multi-tensor loop on CUDA), the baseline benchmarks/train_throughput.py
    compares against."""
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(
        param_groups(model, weight_decay),
        lr=lr,
        betas=betas,
        eps=eps,
        fused=fused and device in FUSED_DEVICES,
    )
