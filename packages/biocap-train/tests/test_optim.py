"""AdamW: the fused kernel gives the default implementation's update, and is used only where it
exists."""

from __future__ import annotations

import torch

from biocap_core.model import build_model
from biocap_train.optim import make_optimizer


def _train(model, fused: bool, steps: int = 5) -> dict[str, torch.Tensor]:
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6, fused=fused)
    assert opt.defaults["fused"] is fused
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for name, p in model.named_parameters():  # the caption head idles, as on a taxonomic step
            p.grad = None if name == "visual.caption_proj" else torch.randn(p.shape, generator=gen)
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_fused_adamw_matches_the_default_update(tiny_cfg):
    torch.manual_seed(0)
    start = build_model(tiny_cfg).state_dict()
    models = [build_model(tiny_cfg) for _ in range(2)]
    for m in models:
        m.load_state_dict(start)
    fused, plain = _train(models[0], True), _train(models[1], False)
    assert all(torch.allclose(fused[n], plain[n], rtol=1e-5, atol=1e-6) for n in fused)
    assert not torch.equal(fused["visual.proj"], start["visual.proj"])
    assert torch.equal(
        fused["visual.caption_proj"], start["visual.caption_proj"]
    )  # no grad: not decayed


def test_fused_falls_back_where_the_device_has_no_kernel(tiny_cfg):
    model = build_model(tiny_cfg, device="meta")
    assert (
        make_optimizer(model, 1e-3, 0.2, (0.9, 0.98), 1e-6, fused=True).defaults["fused"] is False
    )
