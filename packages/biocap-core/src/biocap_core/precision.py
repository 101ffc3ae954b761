"""Numeric precision: the one list of ``--precision`` values and what each means for a model.

A precision fixes two things. The *weights*: ``fp16``/``bf16`` cast them to that dtype
the OpenCLIP way (norms stay fp32: OpenCLIP builds ``LayerNormFp32`` for them), every other
precision keeps fp32 weights. The *autocast*: ``amp`` (fp16) and ``amp_bf16`` run fp32 weights
under autocast. Every app takes its values from :data:`PRECISIONS`, so a value means the same
thing in training, evaluation and prediction.
"""

from __future__ import annotations

import contextlib

import open_clip
import torch
from torch import nn

#: Every precision the toolkit knows, in OpenCLIP's names. An app that supports fewer says why
#: next to its subset of this tuple.
PRECISIONS: tuple[str, ...] = ("fp32", "amp", "amp_bf16", "fp16", "bf16")

#: Precisions that cast the weights ("pure" low precision), and the dtype they cast to.
_WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: Precisions that keep fp32 weights and compute under autocast, and the autocast dtype.
_AUTOCAST_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16}


def check(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError listing them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return precision


def weight_dtype(precision: str) -> torch.dtype | None:
    """The dtype a model's weights are cast to (``fp16``/``bf16``), or None for fp32 weights.

    Also what OpenCLIP's constructors take as ``cast_dtype``: building with it gives the norms
    that compute in fp32 (``LayerNormFp32``), so build with it rather than casting afterwards."""
    return _WEIGHT_DTYPES.get(check(precision))


def input_dtype(precision: str) -> torch.dtype:
    """The dtype of the images a model of this precision computes on: its weights' dtype for
    ``fp16``/``bf16``, else fp32 (autocast casts them where it helps)."""
    return weight_dtype(precision) or torch.float32


def set_precision(model: nn.Module, precision: str) -> nn.Module:
    """Cast a BioCAP's weights for pure ``fp16``/``bf16`` the OpenCLIP way (norms stay fp32); other
    precisions keep fp32 weights. Returns the model."""
    dtype = weight_dtype(precision)
    if dtype is not None:
        open_clip.model.convert_weights_to_lp(model, dtype=dtype)
        # OpenCLIP casts `visual.proj` by name; the caption head must follow it.
        model.visual.caption_proj.data = model.visual.caption_proj.data.to(dtype)
    return model


def autocast(device: torch.device | str, precision: str, *, inputs_cast: bool = False):
    """The autocast context for running a model of ``precision``.

    ``amp``/``amp_bf16``: autocast to fp16/bf16. ``fp32``: none. Pure ``fp16``/``bf16`` weights
    depend on the caller: inference passes fp32 images, so it runs under autocast of the weights'
    dtype, which makes them meet the cast weights; training casts its inputs to :func:`input_dtype`
    (``inputs_cast``) and runs without autocast, as OpenCLIP's training does, so its loss is
    computed as OpenCLIP's is.
    """
    device_type = torch.device(device).type
    dtype = _AUTOCAST_DTYPES.get(check(precision))
    if dtype is None and not inputs_cast:
        dtype = weight_dtype(precision)
    return (
        torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
