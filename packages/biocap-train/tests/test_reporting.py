"""TensorBoard and W&B (offline) receive the same scalars as metrics.jsonl; a missing one is a clear
error."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from biocap_train import TrainConfig, train

PER_HEAD = ("loss_tax", "loss_caption", "scale_tax", "scale_caption", "share_tax", "share_caption")


@pytest.fixture(scope="module")
def reported_run(toy, fast_args, tmp_path_factory) -> Path:
    """One short run with validation and zero-shot, reporting to both TensorBoard and W&B
    (offline)."""
    root = tmp_path_factory.mktemp("reporting")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_CONFIG_DIR": str(root / "wandb-config"),
            "WANDB_CACHE_DIR": str(root / "wandb-cache"),
            "WANDB_DATA_DIR": str(root / "wandb-data"),
        }.items():
            mp.setenv(var, value)
        result = train(
            TrainConfig(
                **fast_args,
                logs=str(root / "logs"),
                report_to="tensorboard,wandb",
                val_data=str(toy / "val" / "shard-000000.tar"),
                zeroshot_data=str(toy / "zeroshot" / "rare_species.csv"),
            )
        )
    return result.run_dir


def jsonl_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """``{"train/loss_tax": {step: value}}`` from metrics.jsonl, numbers only."""
    out: dict[str, dict[int, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if (
                key not in ("kind", "step", "time")
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                out.setdefault(f"{record['kind']}/{key}", {})[record["step"]] = value
    return out


def expected_tags() -> set[str]:
    return {f"train/{k}" for k in PER_HEAD} | {
        "train/loss",
        "train/lr",
        "train/samples_per_s",
        "val/loss_tax",
        "val/loss_caption",
        "zeroshot/top1",
    }


def test_tensorboard_gets_every_jsonl_scalar(reported_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reported_run / "tensorboard"))
    events.Reload()
    expected = jsonl_scalars(reported_run)
    assert expected_tags() <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, by_step in expected.items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        assert all(got[s] == pytest.approx(v, rel=1e-6) for s, v in by_step.items()), tag


def wandb_history(run_file: Path) -> list[dict]:
    """History rows of an offline ``run-*.wandb`` file: a LevelDB-style log (7-byte file header,
    32 KiB blocks, records split into FULL/FIRST/MIDDLE/LAST chunks) of ``wandb.proto`` Records.
    wandb has no public reader for it (``wandb sync`` uploads), so the test reads the log itself."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunks, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", run_file
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def test_wandb_offline_run_gets_every_jsonl_scalar(reported_run):
    runs = list((reported_run / "wandb").glob("offline-run-*-run/run-run.wandb"))
    assert len(runs) == 1, (
        runs
    )  # the run id is the run's name, so --resume continues the same W&B run
    by_step: dict[int, dict] = {}
    for row in wandb_history(runs[0]):
        by_step.setdefault(row["_step"], {}).update(row)
    expected = jsonl_scalars(reported_run)
    assert expected_tags() <= set(expected)
    for tag, values in expected.items():
        for step, value in values.items():
            assert by_step[step][tag] == pytest.approx(value, rel=1e-6), (tag, step)


@pytest.mark.parametrize(
    "target,module,extra",
    [("tensorboard", "torch.utils.tensorboard", "tensorboard"), ("wandb", "wandb", "wandb")],
)
def test_asking_for_a_missing_logger_fails_before_training(
    base_args, monkeypatch, target, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is absent
    with pytest.raises(RuntimeError, match=rf"biocap-train\[{extra}\]"):
        train(TrainConfig(**{**base_args, "report_to": target, "steps": 1}))
    assert not (Path(base_args["logs"]) / "run" / "checkpoints").exists()
