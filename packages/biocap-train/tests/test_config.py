"""Flags use OpenCLIP's names; a TOML or YAML file sets options and flags override it."""

from __future__ import annotations

import pytest

from biocap_train.config import TrainConfig, parse_args, read_config_file


def test_open_clip_flags_parse():
    cfg, given = parse_args(
        [
            "--train-data",
            "a-{0..3}.tar::b-{0..1}.tar",
            "--train-data-upsampling-factors",
            "1::2",
            "--dataset-resampled",
            "--train-num-samples",
            "1000",
            "--batch-size",
            "8",
            "--epochs",
            "3",
            "--lr",
            "1e-4",
            "--warmup",
            "500",
            "--wd",
            "0.1",
            "--beta1",
            "0.8",
            "--beta2",
            "0.9",
            "--eps",
            "1e-8",
            "--precision",
            "amp_bf16",
            "--grad-checkpointing",
            "--accum-freq",
            "2",
            "--torchcompile",
            "--workers",
            "3",
            "--seed",
            "5",
            "--local-loss",
            "--gather-with-grad",
            "--resume",
            "latest",
            "--logs",
            "L",
            "--name",
            "n",
            "--report-to",
            "tensorboard",
            "--text-type",
            "caption",
            "--caption-share",
            "0.25",
        ]
    )
    assert cfg.dataset_resampled and cfg.grad_checkpointing and cfg.torchcompile and cfg.local_loss
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.warmup, cfg.accum_freq, cfg.workers) == (
        8,
        3,
        1e-4,
        500,
        2,
        3,
    )
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.wd, cfg.precision) == (
        0.8,
        0.9,
        1e-8,
        0.1,
        "amp_bf16",
    )
    assert cfg.text_type == "caption" and cfg.caption_share == 0.25 and cfg.resume == "latest"
    assert "batch_size" in given and "model" not in given
    assert parse_args(["--no-local-loss"])[0].local_loss is False


@pytest.mark.parametrize(
    "suffix,text",
    [
        (".toml", 'train-data = "x.tar"\nbatch_size = 12\nlr = 0.01\ndataset-resampled = true\n'),
        (".yaml", "train-data: x.tar\nbatch_size: 12\nlr: 0.01\ndataset-resampled: true\n"),
    ],
)
def test_config_file_with_flags_overriding(tmp_path, suffix, text):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    cfg, _ = parse_args(["--config", str(path), "--lr", "0.5"])
    assert (cfg.train_data, cfg.batch_size, cfg.lr, cfg.dataset_resampled) == (
        "x.tar",
        12,
        0.5,
        True,
    )


def test_config_file_unknown_option_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("batchsize = 3\n")
    with pytest.raises(ValueError, match="unknown option 'batchsize'.*batch-size"):
        parse_args(["--config", str(path)])


def test_shipped_original_recipe_parses():
    from pathlib import Path

    recipe = Path(__file__).parents[1] / "configs" / "biocap-original.toml"
    cfg, _ = parse_args(["--config", str(recipe), "--train-data", "x.tar"])
    cfg.validate()
    assert (cfg.model, cfg.pretrained, cfg.batch_size, cfg.lr, cfg.warmup, cfg.epochs) == (
        "ViT-B-16",
        "openai",
        4096,
        1e-4,
        500,
        50,
    )


def test_invalid_values_are_rejected_with_the_flag_name():
    with pytest.raises(ValueError, match="--caption-share"):
        TrainConfig(caption_share=2.0).validate()
    with pytest.raises(ValueError, match="upsampling-factors needs --dataset-resampled"):
        TrainConfig(train_data_upsampling_factors="1::2").validate()
    with pytest.raises(ValueError, match="--caption-head 'both'"):  # e.g. from a config file
        TrainConfig(caption_head="both").validate()


def test_the_caption_head_is_separate_unless_shared_is_asked_for(capsys):
    assert parse_args([])[0].caption_head == "separate"
    assert parse_args(["--caption-head", "shared"])[0].caption_head == "shared"
    with pytest.raises(SystemExit):
        parse_args(["--caption-head", "both"])
    assert "invalid choice: 'both'" in capsys.readouterr().err


def test_speed_options_parse_and_a_bad_compile_mode_is_named(tmp_path):
    cfg, _ = parse_args(
        [
            "--torchcompile",
            "--torchcompile-mode",
            "max-autotune",
            "--no-fused-adamw",
            "--gpu-decode",
        ]
    )
    assert (cfg.torchcompile_mode, cfg.fused_adamw, cfg.gpu_decode) == ("max-autotune", False, True)
    default = TrainConfig()
    assert (default.torchcompile_mode, default.fused_adamw, default.gpu_decode) == (
        "default",
        True,
        False,
    )
    path = tmp_path / "run.toml"
    path.write_text('torchcompile-mode = "fastest"\n')
    with pytest.raises(ValueError, match="--torchcompile-mode 'fastest'"):
        TrainConfig(**read_config_file(path)).validate()
