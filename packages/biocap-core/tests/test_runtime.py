"""Device and precision defaults every app shares."""

from __future__ import annotations

import torch

from biocap_core.runtime import default_precision, resolve_device


def test_auto_picks_cuda_only_when_there_is_one_and_amp_only_on_gpus():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("cuda:1") == "cuda:1"
    assert default_precision("cpu") == "fp32" and default_precision("cuda:0") == "amp"
