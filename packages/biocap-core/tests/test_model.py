"""The BioCAP model: two heads over one backbone, built on OpenCLIP's CLIP."""

from __future__ import annotations

import open_clip
import pytest
import torch

from biocap_core.model import MAX_LOGIT_SCALE, BioCAP, build_model, set_causal_text_attention


def _batch(model, n=4):
    torch.manual_seed(0)
    images = torch.randn(n, 3, *model.image_size)
    text = model.tokenizer()([f"a photo of species {i}." for i in range(n)])
    return images, text


def test_is_an_open_clip_clip_with_a_second_head(tiny_cfg):
    model = build_model(tiny_cfg)
    assert isinstance(model, open_clip.CLIP) and isinstance(model, BioCAP)
    assert model.visual.caption_proj.shape == model.visual.proj.shape
    keys = set(model.state_dict())
    assert {"visual.proj", "visual.caption_proj", "logit_scale", "logit_scale_caption"} <= keys


def test_heads_share_one_backbone_pass(tiny_cfg):
    model = build_model(tiny_cfg).eval()
    images, text = _batch(model)
    both = model.encode_image_heads(images)
    assert torch.allclose(both["tax"], model.encode_image(images, head="tax"), atol=1e-6)
    assert torch.allclose(both["caption"], model.encode_image(images, head="caption"), atol=1e-6)
    assert not torch.allclose(both["tax"], both["caption"])
    out = model(images, text)
    assert set(out) == {
        "image_features_tax",
        "image_features_caption",
        "text_features",
        "logit_scale",
        "logit_scale_caption",
    }
    assert torch.allclose(out["image_features_tax"].norm(dim=-1), torch.ones(4))
    with pytest.raises(ValueError, match="unknown head"):
        model.encode_image(images, head="wings")


@pytest.mark.parametrize("head", ["tax", "caption"])
def test_one_training_step_with_either_head(tiny_cfg, head):
    model = build_model(tiny_cfg)
    images, text = _batch(model)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    out = model(images, text, heads=(head,))
    scale = out["logit_scale"] if head == "tax" else out["logit_scale_caption"]
    loss = loss_fn(out[f"image_features_{head}"], out["text_features"], scale)
    loss.backward()
    used, unused = ("visual.proj", "logit_scale"), ("visual.caption_proj", "logit_scale_caption")
    if head == "caption":
        used, unused = unused, used
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None for n in used)
    assert all(params[n].grad is None for n in unused)  # the other head is out of the graph
    opt.step()
    model.clamp_logit_scales()
    assert all(not torch.equal(before[n], params[n]) for n in used)
    assert all(torch.equal(before[n], params[n]) for n in unused)
    assert 0 <= model.logit_scale.item() <= MAX_LOGIT_SCALE
    assert torch.isfinite(loss)


def test_vision_config_is_merged_not_replaced(tiny_cfg):
    model = build_model(tiny_cfg, vision_cfg={"patch_size": 16})
    assert model.visual.conv1.kernel_size == (16, 16)
    assert (
        model.visual.transformer.width == 64
    )  # kept from the config, unlike the original's shallow replace


def test_builtin_architecture_and_unknown_names():
    model = build_model("ViT-B-16")
    assert tuple(model.visual.caption_proj.shape) == (768, 512)
    assert model.context_length == 77
    with pytest.raises(ValueError, match="unknown model"):
        build_model("ViT-Z-99")
    with pytest.raises(
        ValueError, match="linear projection `visual.proj`.*ModifiedResNet has none"
    ):
        build_model("RN50")


def test_pure_bf16_casts_both_heads(tiny_cfg):
    model = build_model(tiny_cfg, precision="bf16").eval()
    assert model.visual.proj.dtype == model.visual.caption_proj.dtype == torch.bfloat16
    images, _ = _batch(model, n=2)
    with torch.no_grad():
        feats = model.encode_image_heads(images.to(torch.bfloat16))
    assert all(f.dtype == torch.bfloat16 and torch.isfinite(f).all() for f in feats.values())


def test_toolkit_model_names_resolve_without_side_effects():
    """`BioCAP-toy` is a core name: a fresh interpreter resolves it without importing any app."""
    import subprocess
    import sys

    code = (
        "import sys, open_clip; from biocap_core.model import resolve_config, toolkit_models;cfg ="
        " resolve_config('BioCAP-toy');assert 'BioCAP-toy' in toolkit_models();assert"
        " open_clip.get_model_config('BioCAP-toy') is None, 'import registered configs"
        " globally';assert not any(m.startswith('biocap_train') for m in"
        " sys.modules);print(cfg['embed_dim'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "64"


def test_unknown_model_error_lists_toolkit_models():
    import pytest

    from biocap_core.model import resolve_config

    with pytest.raises(ValueError, match="BioCAP-toy"):
        resolve_config("no-such-model")


def _text_pass(model, text):
    """Text features and their gradient w.r.t. every text-tower parameter."""
    model.zero_grad(set_to_none=True)
    feats = model.encode_text(text)
    feats.square().sum().backward()
    return feats.detach(), [p.grad.clone() for p in model.transformer.parameters()]


def test_causal_text_mask_goes_to_sdpa_as_is_causal_with_the_same_outputs(tiny_cfg, monkeypatch):
    model = build_model(tiny_cfg)
    _, text = _batch(model)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        calls.append((mask is None, kwargs.get("is_causal", args[5] if len(args) > 5 else False)))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    hinted, hinted_grads = _text_pass(model, text)
    layers = len(model.transformer.resblocks)
    assert calls == [(True, True)] * layers  # no mask tensor, the kernel masks
    calls.clear()
    set_causal_text_attention(model, False)
    masked, masked_grads = _text_pass(model, text)
    assert calls == [(False, False)] * layers  # OpenCLIP's explicit float mask
    assert torch.allclose(hinted, masked, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(hinted_grads, masked_grads))
    set_causal_text_attention(model, True)
    with torch.no_grad():  # inference (MHA's fast path keeps using the mask)
        assert torch.allclose(model.eval().encode_text(text), masked, atol=1e-5)
    assert set(model.state_dict()) == set(build_model(tiny_cfg).state_dict())


def test_a_text_tower_without_causal_mask_is_left_alone(tiny_cfg):
    tiny_cfg["text_cfg"]["no_causal_mask"] = True
    model = build_model(tiny_cfg)
    assert model.attn_mask is None
    assert all(type(b.attn) is torch.nn.MultiheadAttention for b in model.transformer.resblocks)
