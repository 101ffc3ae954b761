"""Where and at what precision to run a model when the user does not say, and which versions ran it:
shared by every app."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """``None`` or ``"auto"`` picks CUDA when available; anything else is passed through."""
    return default_device() if device in (None, "", "auto") else device


def default_precision(device: str) -> str:
    """The original's ``amp`` on GPUs; fp32 elsewhere (CPU autocast is slow and lossy)."""
    return "amp" if torch.device(device).type == "cuda" else "fp32"


def versions(app: str) -> dict[str, str]:
    """Python, platform and the versions of ``app``, biocap-core, torch and OpenCLIP: for
    provenance."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (app, "biocap-core", "torch", "open_clip_torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
