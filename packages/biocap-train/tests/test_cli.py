"""Input mistakes end the CLI with one line naming what is wrong and a non-zero exit, never a
traceback."""

from __future__ import annotations

import errno
import tempfile

import pytest

from biocap_train.cli import main


def argv(base_args, **extra) -> list[str]:
    out = ["--no-progress"]
    for key, value in {**base_args, **extra}.items():
        if key != "progress":
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def one_line_error(args) -> str:
    with pytest.raises(SystemExit) as caught:
        main(args)
    message = caught.value.code
    assert (
        isinstance(message, str)
        and message.startswith("biocap-train: error: ")
        and "\n" not in message
    )
    return message


@pytest.mark.parametrize("under", ["file", "file/deeper"])
def test_logs_under_a_regular_file(base_args, tmp_path, under):
    (tmp_path / "file").write_text("not a folder")
    message = one_line_error(argv(base_args, logs=tmp_path / under, steps=1))
    assert (
        f"--logs: cannot write the run folder {tmp_path / under / 'run'}: {tmp_path / 'file'} is a"
        " file" in message
    )


def test_logs_in_a_folder_without_write_permission(base_args, tmp_path, monkeypatch):
    """Simulated at the edge (tests run as root, who may write anywhere): creating a file there is
    refused."""

    def refuse(dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    message = one_line_error(argv(base_args, logs=tmp_path / "logs", steps=1))
    assert (
        f"--logs: cannot write the run folder {tmp_path / 'logs' / 'run'}: Permission denied"
        in message
    )


def test_a_shard_pattern_that_matches_no_file_names_it(base_args, tmp_path):
    message = one_line_error(
        argv(
            base_args,
            train_data=tmp_path / "nowhere" / "shard-{000000..000003}.tar",
            workers=1,
            steps=1,
        )
    )
    assert f"no such shard file(s): {tmp_path / 'nowhere' / 'shard-000000.tar'}" in message


@pytest.mark.timeout(120)  # a loader that spins on samples it must skip would never end
def test_shards_without_captions_under_the_default_text_type(base_args, no_caption_shards):
    message = one_line_error(argv(base_args, train_data="::".join(no_caption_shards), steps=1))
    assert (
        "has caption.txt, which --text-type random" in message
        and "pass --captions TABLE.parquet" in message
    )


def test_gpu_decode_without_cuda_is_refused_before_any_work(base_args, tmp_path):
    message = one_line_error(argv(base_args, steps=1) + ["--gpu-decode"])
    assert "--gpu-decode needs CUDA" in message and "leave the flag out" in message
    assert not (tmp_path / "logs").exists()  # no run folder, so no checkpoint
