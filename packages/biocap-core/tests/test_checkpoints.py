"""Checkpoint loading from every supported layout, strict keys, export and no unpickling of code."""

from __future__ import annotations

import json
import pickle
import random
import shutil

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from biocap_core import checkpoints
from biocap_core.checkpoints import (
    export_open_clip,
    load_model,
    load_weights,
    read_checkpoint,
    save_weights,
    single_projector_state_dict,
)
from biocap_core.errors import CheckpointError
from biocap_core.model import build_model
from biocap_core.precision import input_dtype, weight_dtype


@pytest.fixture
def trained(tiny_cfg):
    """A tiny model whose two heads and two temperatures differ, as after training."""
    torch.manual_seed(1)
    model = build_model(tiny_cfg).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        model.logit_scale_caption.fill_(4.0)
    return model


@pytest.fixture
def images(tiny_cfg):
    torch.manual_seed(2)
    return torch.randn(3, 3, 32, 32)


def test_original_training_checkpoint_with_module_prefix_and_optimizer(
    trained, tiny_cfg, images, tmp_path
):
    opt = torch.optim.AdamW(trained.parameters())
    sd = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save(
        {
            "epoch": 50,
            "name": "biocap",
            "state_dict": sd,
            "optimizer": opt.state_dict(),
            "scaler": None,
        },
        tmp_path / "epoch_50.pt",
    )
    loaded = load_model(tiny_cfg, str(tmp_path / "epoch_50.pt")).eval()
    assert loaded.load_report.metadata == {"epoch": 50, "name": "biocap"}
    assert not loaded.load_report.single_projector
    for head in ("tax", "caption"):
        assert torch.equal(
            loaded.encode_image(images, head=head), trained.encode_image(images, head=head)
        )
    assert loaded.logit_scale_caption.item() == 4.0


def test_a_checkpoint_carrying_its_config_is_a_model_by_itself(trained, images, tmp_path):
    path = tmp_path / "step_00000008.pt"  # as biocap-train writes them: weights, step and model_cfg
    torch.save(
        {"step": 8, "state_dict": trained.state_dict(), "model_cfg": trained.model_cfg}, path
    )
    loaded = load_model(str(path)).eval()
    assert loaded.load_report.metadata == {"step": 8}
    for head in ("tax", "caption"):
        assert torch.equal(
            loaded.encode_image(images, head=head), trained.encode_image(images, head=head)
        )
    with pytest.raises(ValueError, match="cannot be combined"):
        load_model(str(path), "openai")
    bare = save_weights(trained, tmp_path / "bare.safetensors")
    with pytest.raises(
        CheckpointError, match=r"bare.safetensors: holds no model config.*--pretrained"
    ):
        load_model(str(bare))


def test_single_projector_checkpoint_copies_proj_into_caption_head(trained, tiny_cfg, tmp_path):
    sd = single_projector_state_dict(trained, "tax")
    assert "visual.caption_proj" not in sd and "logit_scale_caption" not in sd
    save_file(sd, str(tmp_path / "bioclip.safetensors"))
    loaded = load_model(tiny_cfg, str(tmp_path / "bioclip.safetensors"))
    assert loaded.load_report.single_projector
    assert torch.equal(loaded.visual.caption_proj, loaded.visual.proj)
    assert torch.equal(loaded.visual.proj, trained.visual.proj)
    assert loaded.logit_scale_caption.item() == loaded.logit_scale.item() == 3.0


@pytest.mark.parametrize("head", ["tax", "caption"])
def test_export_reloads_with_identical_embeddings(trained, images, tmp_path, head):
    out = export_open_clip(trained, tmp_path / "export", head=head)
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["preprocess_cfg"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    expected = trained.encode_image(images, head=head)
    stock = open_clip.create_model(f"local-dir:{out}").eval()  # plain OpenCLIP, strict load
    assert torch.allclose(stock.encode_image(images), expected, atol=1e-6)
    assert torch.allclose(stock.logit_scale, trained.logit_scale_of(head))
    ours = load_model(f"local-dir:{out}").eval()
    assert torch.equal(ours.encode_image(images, head="tax"), expected)


def test_dual_safetensors_round_trip(trained, tiny_cfg, images, tmp_path):
    path = save_weights(trained, tmp_path / "biocap.safetensors")
    loaded = load_model(tiny_cfg, str(path)).eval()
    assert torch.equal(
        loaded.encode_image(images, head="caption"), trained.encode_image(images, head="caption")
    )


def test_hf_hub_names_go_through_open_clip_download(trained, images, tmp_path, monkeypatch):
    """The real hf-hub path, with the hub download (network edge) served from a local folder."""
    repo = export_open_clip(trained, tmp_path / "hub" / "imageomics" / "biocap")
    asked = []

    def fake_download(model_id, filename=None, revision=None, cache_dir=None):
        asked.append((model_id, filename))
        name = filename or "open_clip_pytorch_model.bin"
        if name == "open_clip_pytorch_model.bin":
            name = "open_clip_model.safetensors"
        return str(tmp_path / "hub" / model_id / name)

    monkeypatch.setattr(checkpoints, "download_pretrained_from_hf", fake_download)
    model = load_model("hf-hub:imageomics/biocap").eval()
    assert ("imageomics/biocap", "open_clip_config.json") in asked
    assert model.load_report.single_projector
    assert torch.equal(model.encode_image(images), trained.encode_image(images))
    assert repo.is_dir()


def test_pretrained_tag_resolves_through_open_clip(monkeypatch, tmp_path):
    seen = {}

    def fake_download(cfg, cache_dir=None):
        seen.update(cfg)
        return str(tmp_path / "weights.safetensors")

    monkeypatch.setattr(checkpoints, "download_pretrained", fake_download)
    cfg, preprocess, weights = checkpoints.resolve_pretrained("ViT-B-16", "openai")
    assert seen["hf_hub"].startswith("timm/vit_base_patch16_clip_224.openai")
    assert weights.endswith("weights.safetensors") and cfg["embed_dim"] == 512
    with pytest.raises(ValueError, match="neither an OpenCLIP tag"):
        checkpoints.resolve_pretrained("ViT-B-16", "no-such-tag")


def test_unexpected_and_missing_keys_are_listed(trained, tiny_cfg, tmp_path):
    sd = trained.state_dict()
    sd["visual.extra_head"] = torch.zeros(2)
    del sd["ln_final.weight"]
    torch.save(sd, tmp_path / "odd.pt")
    with pytest.raises(
        CheckpointError,
        match=r"odd.pt.*missing keys \(1\): \['ln_final.weight'\].*"
        r"unexpected keys \(1\): \['visual.extra_head'\]",
    ):
        load_model(tiny_cfg, str(tmp_path / "odd.pt"))


def test_shape_mismatch_is_listed(trained, tmp_path):
    other = build_model({**trained.model_cfg, "embed_dim": 16})
    with pytest.raises(CheckpointError, match="shape mismatches.*visual.proj"):
        load_weights(other, trained.state_dict())


def test_corrupted_checkpoint(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt: cannot read checkpoint"):
        read_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


class Payload:
    """Stands for arbitrary code inside a pickle."""


def test_pickled_code_is_refused(tmp_path):
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: refusing to load"):
        read_checkpoint(tmp_path / "evil.pt")


def test_local_dir_without_weights(trained, tmp_path):
    out = export_open_clip(trained, tmp_path / "m")
    (out / "open_clip_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_model(f"local-dir:{out}")
    shutil.rmtree(out)


@pytest.mark.parametrize(
    "content",
    [
        random.Random(0).randbytes(4096),  # starts with neither zip nor pickle bytes
        b"",
        b"epoch 50, loss 0.3\n" * 20,
        pickle.dumps({"visual.proj": [[0.0]]}),  # a pickle, but not one torch.save wrote
    ],
    ids=["random", "empty", "text", "plain-pickle"],
)
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path, content):
    (tmp_path / "junk.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"junk.pt: not a checkpoint") as info:
        read_checkpoint(tmp_path / "junk.pt")
    assert "pickled code" not in str(info.value)


def test_legacy_torch_save_files_are_still_read(trained, tmp_path):
    state = single_projector_state_dict(trained)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert read_checkpoint(tmp_path / "legacy.pt")["state_dict"].keys() == state.keys()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_checkpoint_loads_into_the_model_build_model_makes_at_that_precision(
    trained, images, tmp_path, precision
):
    """--precision bf16 with or without --pretrained gives one model: the same module types
    (OpenCLIP's fp32-computing LayerNormFp32, not a cast LayerNorm), dtypes and outputs."""
    path = save_weights(trained, tmp_path / "w.safetensors")
    loaded = load_model(trained.model_cfg, str(path), precision=precision).eval()
    built = build_model(trained.model_cfg, precision=precision).eval()
    load_weights(built, path)
    kinds = [type(m) for m in loaded.modules()]
    assert kinds == [type(m) for m in built.modules()]
    assert (
        open_clip.transformer.LayerNormFp32 in kinds
        and open_clip.transformer.LayerNorm not in kinds
    )
    assert {k: v.dtype for k, v in loaded.state_dict().items()} == {
        k: v.dtype for k, v in built.state_dict().items()
    }
    with torch.no_grad():
        text = loaded.tokenizer()(["a photo of a fish.", "a red beetle."])
        out = [m(images.to(input_dtype(precision)), text) for m in (loaded, built)]
    for key in ("image_features_tax", "image_features_caption", "text_features"):
        assert out[0][key].dtype == weight_dtype(precision)
        assert torch.equal(out[0][key], out[1][key]), key
