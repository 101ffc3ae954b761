"""The shard pipeline: exact mid-epoch restart, per-step texts, captions by uuid, bad data skipped."""

from __future__ import annotations

import copy
import pickle
import tarfile
from pathlib import Path

import polars as pl
import pytest
import torch
import webdataset as wds
from biocap_core.errors import ShardError
from biocap_core.model import build_model
from biocap_core.shards import expand_sources, iter_samples
from biocap_train import batches as batches_module
from biocap_train.bad_data import DataUnusable
from biocap_train.captions import CaptionIndex
from biocap_train.config import TrainConfig
from biocap_train.distributed import DistInfo
from biocap_train.image_prep import WorkerDecode
from biocap_train.run_plan import plan_run
from biocap_train.schedule import TextSchedule, text_type_for_step
from biocap_train.streams import StreamSpec, TrainStream, loader
from biocap_train.train_batches import TrainBatches


@pytest.fixture(scope="module")
def model(tiny_cfg):
    return build_model(tiny_cfg)


def make_spec(urls, model, text_type="random", joint=False, **kw) -> StreamSpec:
    args = dict(urls=urls, weights=None, resampled=False, batch_size=8, epoch=1, rank=0,
                world_size=1, num_streams=1, microbatches=4, first_step=40, accum_freq=1,
                prep=WorkerDecode(model, train=True), tokenizer=model.tokenizer(),
                texts=TextSchedule(3, text_type, joint=joint), shuffle_buffer=50)
    args.update(kw)
    return StreamSpec(**args)


def collect(spec, workers):
    return {b.index: b for b in loader(TrainStream(spec), workers)}


@pytest.mark.parametrize("resampled", [False, True])
def test_a_restarted_stream_continues_exactly_mid_epoch(toy_train, model, resampled):
    urls, _ = expand_sources(toy_train)
    spec = make_spec(urls, model, num_streams=2, microbatches=7, resampled=resampled)
    full = collect(spec, workers=2)
    assert sorted(full) == list(range(7))
    assert {full[i].stream for i in range(7)} == {0, 1}
    # after 3 micro-batches: stream 0 produced 0 and 2, stream 1 produced 1
    skip = {0: full[2].consumed, 1: full[1].consumed}
    rest = collect(make_spec(urls, model, num_streams=2, microbatches=7, resampled=resampled, start=3, skip=skip),
                   workers=2)
    assert sorted(rest) == [3, 4, 5, 6]
    for i in rest:
        assert rest[i].keys == full[i].keys
        assert torch.equal(rest[i].image, full[i].image)  # augmentation seeded by the batch
        assert torch.equal(rest[i].text, full[i].text)


def test_batches_carry_only_the_text_of_their_step(toy_train, model):
    urls, _ = expand_sources(toy_train)
    spec = make_spec(urls, model, microbatches=6, accum_freq=2)
    tok = model.tokenizer()
    for index, batch in collect(spec, workers=0).items():
        expected = text_type_for_step(40 + index // 2, seed=3)
        assert batch.step_text.text_type == expected and batch.caption_text is None
        assert batch.step_text.heads == ("caption" if expected == "caption" else "tax",)
        sample = next(s for s in iter_samples(urls) if s["__key__"] == batch.keys[0])
        member = "caption.txt" if expected == "caption" else f"{expected.lower()}.txt"
        assert torch.equal(batch.text[0], tok([sample[member].decode()])[0])
    joint = collect(make_spec(urls, model, joint=True, microbatches=2), workers=0)
    for b in joint.values():
        assert b.caption_text is not None and b.step_text.text_type != "caption"
        assert b.step_text.heads == ("tax", "caption")


def test_captions_from_a_parquet_table_by_uuid(toy_train, model, tmp_path):
    urls, _ = expand_sources(toy_train)
    keys = [s["__key__"] for s in iter_samples(urls)]
    table = pl.DataFrame({"uuid": keys[::2], "caption": [f"parquet caption {i}" for i in range(len(keys[::2]))]})
    table.write_parquet(tmp_path / "captions.parquet")
    index = CaptionIndex.build(tmp_path / "captions.parquet", tmp_path / "index")
    assert len(index) == len(keys[::2]) and index.get(keys[2]) == "parquet caption 1" and index.get(keys[1]) is None
    assert len(pickle.dumps(index)) < 1000  # workers receive the folder name, not the captions
    spec = make_spec(urls, model, text_type="caption", captions=index, microbatches=3)
    batches = collect(spec, workers=0)
    tok = model.tokenizer()
    wanted = dict(zip(table["uuid"], table["caption"]))
    for batch in batches.values():
        assert all(k in wanted for k in batch.keys)
        assert torch.equal(batch.text, tok([wanted[k] for k in batch.keys]))
    assert batches[2].counts["counts"]["no_text"] > 0  # samples the table has no caption for


def test_duplicate_uuids_in_the_caption_table_are_an_error(tmp_path):
    pl.DataFrame({"uuid": ["a", "b", "a"], "caption": ["x", "y", "z"]}).write_parquet(tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="1 duplicate uuid"):
        CaptionIndex.build(tmp_path / "c.parquet", tmp_path / "index")


def write_bad_shards(toy: Path, out: Path) -> list[str]:
    """Shard A: one undecodable JPEG, one sample with no text; shard B: cut off mid-way."""
    samples = [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
               for s in iter_samples(str(toy / "train" / "shard-000000.tar"))]
    samples[3]["jpg"] = b"\xff\xd8 this is not a jpeg"
    samples[5] = {"__key__": samples[5]["__key__"], "jpg": samples[5]["jpg"]}
    paths = [out / "bad-a.tar", out / "bad-b.tar"]
    for path, part in zip(paths, (samples[:16], samples[16:])):
        with wds.TarWriter(str(path)) as sink:
            for s in part:
                sink.write(s)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: int(len(data) * 0.6)])
    return [str(p) for p in paths]


def test_bad_samples_and_truncated_tars_are_skipped_and_counted(toy, model, tmp_path):
    urls = write_bad_shards(toy, tmp_path)
    batches = collect(make_spec(urls, model, text_type="sci", microbatches=6), workers=0)
    assert sorted(batches) == list(range(6)) and all(len(b.keys) == 8 for b in batches.values())
    counts = batches[5].counts["counts"]
    assert counts["corrupt_image"] >= 1 and counts["no_text"] >= 1 and counts["tar_error"] >= 1
    assert "bad-b.tar" in " ".join(batches[5].counts["examples"]["tar_error"])


def test_unreadable_shards_fail_with_a_clear_error_not_a_hang(model, tmp_path):
    """Raised in a worker process, the error comes out as itself: its type and its one line."""
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(ShardError, match="shards in a row gave no sample") as caught:
        collect(make_spec([str(junk)], model, text_type="sci"), workers=1)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_fewer_shards_than_readers_is_an_error_before_training(toy):
    cfg = TrainConfig(train_data=str(toy / "train" / "shard-00000{0..2}.tar"), workers=2)
    with pytest.raises(ValueError, match="3 shard.*2 rank.*4 readers.*--dataset-resampled"):
        plan_run(cfg, DistInfo(rank=0, world_size=2))
    cfg.dataset_resampled = True
    plan = plan_run(cfg, DistInfo(rank=0, world_size=2))
    assert plan.samples_per_epoch == 96 and plan.steps_per_epoch == 1  # 96 / (64 x 2) rounded up


@pytest.mark.timeout(120)
def test_a_text_no_sample_has_stops_the_stream_with_one_line_not_a_hang(no_caption_shards, model):
    """Before: the worker looped forever at full CPU looking for a caption. The error raised in the worker
    process comes out with its own message, not the DataLoader's traceback dump."""
    spec = make_spec(no_caption_shards, model, text_type="caption")
    with pytest.raises(DataUnusable) as caught:
        collect(spec, workers=1)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert "10000 samples in a row" in message and "has caption.txt: pass --captions" in message
    assert "shard-000000.tar..shard-000005.tar (6 shards)" in message


@pytest.mark.timeout(120)
def test_undecodable_images_everywhere_stop_the_stream(toy, model, tmp_path, rewrite_shards, monkeypatch):
    # failed decodes cost about 1 ms each
    monkeypatch.setattr(batches_module, "MAX_UNUSABLE_IN_A_ROW", 500)
    urls = rewrite_shards(sorted(str(p) for p in (toy / "train").glob("shard-*.tar")), tmp_path,
                          lambda s: {**s, "jpg": b"\xff\xd8 not a jpeg"})
    with pytest.raises(DataUnusable, match="no image read from .* could be decoded"):
        collect(make_spec(urls, model, text_type="sci"), workers=0)


def test_a_few_bad_samples_in_a_row_do_not_stop_the_stream(toy, model, tmp_path, monkeypatch):
    """The bound counts skipped samples in a row: a good sample resets it."""
    monkeypatch.setattr(batches_module, "MAX_UNUSABLE_IN_A_ROW", 3)
    urls = write_bad_shards(toy, tmp_path)  # isolated bad samples between good ones
    batches = collect(make_spec(urls, model, text_type="sci", microbatches=4), workers=0)
    assert sorted(batches) == list(range(4))


def plan(train_data, **kw):
    return plan_run(TrainConfig(train_data="::".join(train_data), train_num_samples=64, workers=1, **kw), DistInfo())


@pytest.mark.parametrize("options", [{}, {"text_type": "caption"}, {"text_type": "taxon", "joint_loss": True}])
def test_shards_without_captions_are_refused_before_training(no_caption_shards, options):
    with pytest.raises(DataUnusable, match=r"--train-data: none of the first 32 samples of .*shard-000000\.tar "
                                           r"has caption\.txt, .*pass --captions TABLE\.parquet"):
        plan(no_caption_shards, **options)


def test_runs_the_data_can_serve_pass_the_check(no_caption_shards, toy, tmp_path):
    plan(no_caption_shards, text_type="taxon_com")
    plan(no_caption_shards, caption_share=0.0)
    keys = [s["__key__"] for s in iter_samples(no_caption_shards)]
    pl.DataFrame({"uuid": keys, "caption": ["a caption"] * len(keys)}).write_parquet(tmp_path / "c.parquet")
    plan(no_caption_shards, captions=str(tmp_path / "c.parquet"))
    plan(no_caption_shards, text_type="taxon_com", val_data=str(toy / "val" / "shard-000000.tar"))


def test_the_check_names_missing_taxonomic_texts_and_undecodable_images(toy, tmp_path, rewrite_shards):
    urls = sorted(str(p) for p in (toy / "train").glob("shard-*.tar"))
    no_com = rewrite_shards(urls, tmp_path / "no-com", lambda s: {k: v for k, v in s.items() if k != "com.txt"})
    with pytest.raises(DataUnusable, match=r"has com\.txt, which --text-type random trains on; they have sci, "
                                           r"sci_com, taxon, taxon_com"):
        plan(no_com)
    val = rewrite_shards([str(toy / "val" / "shard-000000.tar")], tmp_path / "val",
                         lambda s: {k: v for k, v in s.items() if k != "caption.txt"})
    with pytest.raises(DataUnusable, match=r"--val-data: .*has caption\.txt; validation scores .*leave out --val-data"):
        plan(urls, val_data=val[0])
    broken = rewrite_shards(urls, tmp_path / "broken", lambda s: {**s, "jpg": b"not an image"})
    with pytest.raises(DataUnusable, match=r"--train-data: none of the first 32 samples of .* has a decodable image"):
        plan(broken, text_type="sci")


def test_a_missing_shard_is_named_before_training(toy, tmp_path):
    with pytest.raises(ShardError, match=r"no such shard file\(s\): .*nowhere/shard-000000\.tar, .* and 5 more"):
        plan([str(tmp_path / "nowhere" / "shard-{000000..000009}.tar")])
    tarfile.open(tmp_path / "empty.tar", "w").close()
    with pytest.raises(DataUnusable, match=r"empty\.tar: they hold no samples"):
        plan([str(tmp_path / "empty.tar")])


# --gpu-decode's data path, with the device decode run on the CPU: require_cuda is the run's check
# (train()), not the data path's, so these tests exercise the same code a GPU run does.
#: Tolerance of the device path against PIL's: biocap-core's tests/test_gpu_decode.py's looser (CUDA) bound,
#: 0.25 per value and a mean below one uint8 level. Its CPU bound (3 levels, mean 0.002) holds for 224 px
#: crops of photos; the toy's sharp-edged 32 px crops are upsampled, and PIL rounds between its two bicubic
#: passes where torch does not (up to 5 levels, mean 0.0025 here). A crop shifted by 2 px differs by 0.08.
MAX_DIFF, MEAN_DIFF = 0.25, 0.01


def train_batches(train_data: str, model, gpu_decode: bool, restored=None, workers=2) -> TrainBatches:
    cfg = TrainConfig(train_data=train_data, batch_size=8, train_num_samples=64, workers=workers, seed=3,
                      shuffle_buffer=50, precision="fp32", text_type="sci", gpu_decode=gpu_decode)
    return TrainBatches(cfg, plan_run(cfg, DistInfo()), DistInfo(), model, None, restored, say=print)


def test_gpu_decode_gives_the_cpu_decodes_batches_and_resumes_exactly(toy_train, model):
    cpu = [m for m, in train_batches(toy_train, model, gpu_decode=False).steps(0, 5)]
    data = train_batches(toy_train, model, gpu_decode=True)
    device, position = [], None
    for step, (micro,) in enumerate(data.steps(0, 5)):
        device.append(micro)
        if step == 2:
            position = copy.deepcopy(data.position)
    for a, b in zip(cpu, device, strict=True):
        assert a.keys == b.keys and torch.equal(a.text, b.text)
        diff = (b.image - a.image).abs()  # the same crops, drawn in the workers from the same seed
        assert diff.amax() <= MAX_DIFF and diff.mean(dim=(1, 2, 3)).amax() <= MEAN_DIFF
    resumed = [m for m, in train_batches(toy_train, model, gpu_decode=True, restored=position).steps(3, 5)]
    for a, b in zip(device[3:], resumed, strict=True):
        assert a.keys == b.keys and torch.equal(a.image, b.image)


def test_a_jpeg_only_the_device_cannot_decode_is_dropped_and_counted(toy, model, tmp_path, rewrite_shards,
                                                                     corrupt_inside):
    urls = sorted(str(p) for p in (toy / "train").glob("shard-*.tar"))
    bad_keys = {s["__key__"] for s in list(iter_samples(urls))[::4]}
    bad = rewrite_shards(urls, tmp_path, lambda s: {**s, "jpg": corrupt_inside(s["jpg"])}
                         if s["__key__"] in bad_keys else s)
    data = train_batches("::".join(bad), model, gpu_decode=True, workers=0)
    batches = [m for m, in data.steps(0, 8)]
    assert not bad_keys & {k for b in batches for k in b.keys}
    sizes = [len(b.image) for b in batches]
    assert all(len(b.text) == len(b.keys) == n for b, n in zip(batches, sizes))
    problems = data.problems()  # counted with the workers' skips, in the position a checkpoint saves
    assert problems.counts["corrupt_image"] == 8 * 8 - sum(sizes) > 0
    assert all("(on the device)" in e for e in problems.examples["corrupt_image"])
