"""The captioning loop with a deterministic fake engine: coverage, isolation, resume, outputs."""

from __future__ import annotations

import io
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import webdataset as wds

from biocap_captions.engine import EngineBroken, Failure
from biocap_captions.pipeline import Captioner, RunOptions, one_ahead
from biocap_captions.prompt import PROMPT_VERSION, FormatExamples, PromptBuilder
from biocap_captions.sources import catalog_units, load_descriptions, shard_units
from biocap_captions.stats import summarize
from biocap_captions.store import OutputError, ResumeMismatch
from biocap_core import schemas
from biocap_core.errors import SchemaError, ShardError
from biocap_core.shards import iter_samples


def shard_uuids(toy: Path) -> list[str]:
    return [s["__key__"] for s in iter_samples(str(toy / "train" / "shard-{000000..000003}.tar"))]


def units_of(toy: Path):
    return shard_units(str(toy / "train" / "shard-{000000..000003}.tar"))


def captioner(engine, out: Path, toy: Path, wiki=True, **options) -> Captioner:
    descriptions = None
    if wiki:
        catalog = schemas.CATALOG.read(toy / "catalog.parquet")
        descriptions = load_descriptions(toy / "wiki" / "wiki_descriptions.parquet", catalog)
    opts = dict(out=out, batch_size=3, progress=False, checkpoint_seconds=0.0) | options
    return Captioner(
        engine,
        PromptBuilder(FormatExamples.load(toy / "format_examples.parquet")),
        RunOptions(**opts),
        descriptions,
    )


def outputs(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    caps = [schemas.CAPTIONS.read(p) for p in sorted((out / "captions").glob("*.parquet"))]
    errs = [schemas.CAPTION_ERRORS.read(p) for p in sorted((out / "errors").glob("*.parquet"))]
    return pl.concat(caps), pl.concat(errs)


def test_every_uuid_gets_exactly_one_caption_with_provenance(toy_dir, tmp_path, fake_engine):
    engine = fake_engine()
    report = captioner(engine, tmp_path, toy_dir).run(units_of(toy_dir))
    captions, errors = outputs(tmp_path)
    assert report.failed == {} and report.skipped == [] and report.errors_left == 0
    assert report.finished == [f"shard-00000{i}" for i in range(4)]
    assert report.captions == 40 and report.errors == 0
    assert sorted(captions["uuid"]) == sorted(shard_uuids(toy_dir))
    assert errors.height == 0
    assert set(captions["model"]) == {"fake-vlm"} and set(captions["prompt_version"]) == {
        PROMPT_VERSION
    }
    assert captions["wiki_used"].all() and captions["names_species"].all()
    assert set(captions["shard"]) == {f"shard-00000{i}.tar" for i in range(4)}
    assert captions["created_at"].dtype == pl.Datetime("us", "UTC")
    assert max(len(call) for call in engine.calls) == 3
    assert not (tmp_path / "partial").exists() or not any((tmp_path / "partial").iterdir())
    # the species-level wiki text reached the prompt of each sample
    some = engine.requests[captions["uuid"][0]].instruction
    assert "Reference text about" in some and "Description. Adults have a" in some


def test_a_failing_sample_is_isolated_by_splitting_the_batch(toy_dir, tmp_path, fake_engine):
    uuids = shard_uuids(toy_dir)
    poison, rejected = uuids[4], uuids[7]
    engine = fake_engine(raise_on={poison}, fail={rejected: "HTTP 400: image too large"})
    report = captioner(engine, tmp_path, toy_dir).run(units_of(toy_dir))
    captions, errors = outputs(tmp_path)
    assert report.failed == {} and len(report.finished) == 4
    assert (report.captions, report.errors, report.errors_left) == (38, 2, 2)
    assert sorted(errors["uuid"]) == sorted([poison, rejected])
    reasons = dict(zip(errors["uuid"], errors["reason"]))
    assert reasons[poison] == f"ValueError: prompt of {poison} is too long"
    assert reasons[rejected] == "HTTP 400: image too large"
    assert sorted(captions["uuid"]) == sorted(set(uuids) - {poison, rejected})
    assert [poison] in engine.calls  # the batch was split down to the poisoned sample


def test_batches_stream_from_the_shard(toy_dir, tmp_path, fake_engine):
    """The engine sees batch_size samples before the unit yields more: memory follows the batch."""
    pulled = []

    class Counting:
        def __init__(self, unit):
            self.unit, self.name, self.label, self.expected = (
                unit,
                unit.name,
                unit.label,
                unit.expected,
            )

        def samples(self):
            for sample in self.unit.samples():
                pulled.append(sample.uuid)
                yield sample

    class Recording(fake_engine):
        seen_at_call: list[int] = []

        def generate(self, requests):
            self.seen_at_call.append(len(pulled))
            return super().generate(requests)

    engine = Recording()
    captioner(engine, tmp_path, toy_dir).run([Counting(units_of(toy_dir)[0])])
    assert engine.seen_at_call == [3, 6, 9, 10]


def test_samples_without_an_image_or_with_an_empty_caption_are_errors(
    toy_dir, tmp_path, fake_engine
):
    src = toy_dir / "train" / "shard-000000.tar"
    samples = list(iter_samples(str(src)))
    shard = tmp_path / "in" / "shard-000000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        for i, s in enumerate(samples):
            sink.write(
                {k: v for k, v in s.items() if not (i == 2 and k == "jpg") and k != "__url__"}
            )
    no_image, empty = samples[2]["__key__"], samples[5]["__key__"]
    engine = fake_engine(texts={empty: "<|im_end|>"})
    captioner(engine, tmp_path / "out", toy_dir, wiki=False).run(shard_units(str(shard)))
    captions, errors = outputs(tmp_path / "out")
    reasons = dict(zip(errors["uuid"], errors["reason"]))
    assert reasons[no_image].startswith("no jpg member: sample")
    assert reasons[empty].startswith("empty caption")
    assert captions.height == 8 and no_image not in engine.requests


def test_a_sample_without_a_common_name_is_prompted_by_its_scientific_name(
    toy_dir, tmp_path, fake_engine
):
    """Core's display-name fallback (``Taxon.common``), for shard members and catalog rows alike."""
    samples = list(iter_samples(str(toy_dir / "train" / "shard-000000.tar")))[:3]
    named, nameless = samples[0], samples[1]
    shard = tmp_path / "in" / "shard-000000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        for s in samples:
            sink.write(
                {
                    k: v
                    for k, v in s.items()
                    if k != "__url__" and not (s is nameless and k == "common_name.txt")
                }
            )
    captioner(fake_engine(), tmp_path / "shards-out", toy_dir, wiki=False).run(
        shard_units(str(shard))
    )
    captions, _ = outputs(
        tmp_path / "shards-out"
    )  # the fake engine's caption names what the prompt named
    prompted = {
        u: c.removeprefix("The ").split(" shows ")[0]
        for u, c in zip(captions["uuid"], captions["caption"])
    }

    (tmp_path / "img").mkdir()
    for s in samples:
        (tmp_path / "img" / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
    catalog = (
        schemas.CATALOG.read(toy_dir / "catalog.parquet")
        .filter(pl.col("uuid").is_in([s["__key__"] for s in samples]))
        .with_columns(
            (pl.lit("img/") + pl.col("uuid") + ".jpg").alias("image_path"),
            pl.when(pl.col("uuid") == nameless["__key__"])
            .then(pl.lit(""))
            .otherwise(pl.col("common_name"))
            .alias("common_name"),
        )
    )
    captioner(fake_engine(), tmp_path / "catalog-out", toy_dir, wiki=False).run(
        catalog_units(catalog, "catalog.parquet", tmp_path, rows_per_unit=8)
    )
    from_catalog, _ = outputs(tmp_path / "catalog-out")
    assert dict(zip(from_catalog["uuid"], from_catalog["caption"])) == dict(
        zip(captions["uuid"], captions["caption"])
    )

    scientific, common = nameless["scientific_name.txt"].decode(), named["common_name.txt"].decode()
    assert prompted[nameless["__key__"]] == scientific != nameless["common_name.txt"].decode()
    assert prompted[named["__key__"]] == common != named["scientific_name.txt"].decode()
    assert captions["names_species"].all() and from_catalog["names_species"].all()


def test_rerun_skips_finished_units_and_finishes_partial_ones(toy_dir, tmp_path, fake_engine):
    class Interrupted(fake_engine):
        def generate(self, requests):
            if len(self.calls) == 5:  # mid second shard (batches of 3 over shards of 10)
                raise KeyboardInterrupt
            return super().generate(requests)

    with pytest.raises(KeyboardInterrupt):
        captioner(Interrupted(), tmp_path, toy_dir).run(units_of(toy_dir))
    assert (tmp_path / "captions" / "shard-000000.parquet").is_file()
    assert sorted(p.name for p in (tmp_path / "partial" / "shard-000001").iterdir()) == [
        "000000.captions.parquet"
    ]
    engine = fake_engine()
    report = captioner(engine, tmp_path, toy_dir).run(units_of(toy_dir))
    assert report.skipped == ["shard-000000"]
    captions, _ = outputs(tmp_path)
    assert sorted(captions["uuid"]) == sorted(shard_uuids(toy_dir))
    assert sum(len(c) for c in engine.calls) == 40 - 10 - 3  # only what was not done before
    assert not (tmp_path / "partial" / "shard-000001").exists()
    rerun = fake_engine()
    assert captioner(rerun, tmp_path, toy_dir).run(units_of(toy_dir)).skipped == [
        u.name for u in units_of(toy_dir)
    ]
    assert rerun.calls == []


def test_resuming_with_another_model_is_refused(toy_dir, tmp_path, fake_engine):
    class Interrupted(fake_engine):
        def generate(self, requests):
            if self.calls:
                raise KeyboardInterrupt
            return super().generate(requests)

    with pytest.raises(KeyboardInterrupt):
        captioner(Interrupted(), tmp_path, toy_dir).run(units_of(toy_dir))
    other = fake_engine()
    other.model = "another-vlm"
    with pytest.raises(ResumeMismatch, match="model 'fake-vlm'"):
        captioner(other, tmp_path, toy_dir).run(units_of(toy_dir))


def test_a_broken_engine_stops_the_run_and_its_failures_are_retried(toy_dir, tmp_path, fake_engine):
    class Dies(fake_engine):
        def generate(self, requests):
            if len(self.calls) >= 2:
                self.calls.append([r.uuid for r in requests])
                return [Failure("RuntimeError: CUDA error: device lost")] * len(requests)
            return super().generate(requests)

    with pytest.raises(EngineBroken, match="4 samples in a row failed"):
        captioner(Dies(), tmp_path, toy_dir, max_consecutive_failures=4).run(units_of(toy_dir))
    assert not (tmp_path / "errors").exists()
    captioner(fake_engine(), tmp_path, toy_dir).run(units_of(toy_dir))
    captions, errors = outputs(tmp_path)
    assert errors.height == 0 and sorted(captions["uuid"]) == sorted(shard_uuids(toy_dir))


def test_an_output_write_failure_stops_the_run_naming_the_file(
    toy_dir, tmp_path, fake_engine, monkeypatch
):
    """A full disk must stop the run, not let it caption the remaining units only to lose them."""
    write = schemas.write_parquet_atomic

    def disk_full_for_final_tables(df, path):
        if Path(path).parent.name == "errors":
            df.write_parquet(
                "/dev/full"
            )  # the error polars really raises: ... No space left on device
        return write(df, path)

    monkeypatch.setattr(schemas, "write_parquet_atomic", disk_full_for_final_tables)
    engine = fake_engine()
    with pytest.raises(
        OutputError, match=r"cannot write .*errors/shard-000000\.parquet: .*No space left on device"
    ):
        captioner(engine, tmp_path, toy_dir).run(units_of(toy_dir))
    assert sum(len(call) for call in engine.calls) == 10  # the first unit only
    monkeypatch.undo()  # space freed: the rerun finishes from the checkpoints
    rerun = fake_engine()
    captioner(rerun, tmp_path, toy_dir).run(units_of(toy_dir))
    captions, errors = outputs(tmp_path)
    assert sorted(captions["uuid"]) == sorted(shard_uuids(toy_dir)) and errors.height == 0
    assert (
        sum(len(call) for call in rerun.calls) == 30
    )  # the first unit's rows were checkpointed before its final write


def test_retrying_error_rows_is_safe_against_a_kill(toy_dir, tmp_path, fake_engine):
    """A kill while error rows are retried leaves a unit that any rerun finishes, each uuid once."""
    uuids = shard_uuids(toy_dir)
    captioner(
        fake_engine(fail={uuids[1]: "HTTP 503", uuids[2]: "HTTP 503"}), tmp_path, toy_dir
    ).run(units_of(toy_dir)[:1])

    class Killed(fake_engine):
        def generate(self, requests):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        captioner(Killed(), tmp_path, toy_dir, retry_errors=True).run(units_of(toy_dir)[:1])
    engine = fake_engine()
    report = captioner(engine, tmp_path, toy_dir).run(
        units_of(toy_dir)[:1]
    )  # no retry_errors needed now
    assert engine.calls == [[uuids[1], uuids[2]]] and report.errors_left == 0
    captions, errors = outputs(tmp_path)
    assert sorted(captions["uuid"]) == sorted(uuids[:10]) and errors.height == 0


def test_captioned_shards_keep_every_member_and_add_the_caption(toy_dir, tmp_path, fake_engine):
    first = shard_uuids(toy_dir)[0]
    engine = fake_engine(fail={first: "HTTP 400: bad"})
    captioner(engine, tmp_path, toy_dir, write_shards=tmp_path / "shards").run(
        units_of(toy_dir)[:1]
    )
    captions, _ = outputs(tmp_path)
    by_uuid = dict(zip(captions["uuid"], captions["caption"]))
    with (
        tarfile.open(toy_dir / "train" / "shard-000000.tar") as src,
        tarfile.open(tmp_path / "shards" / "shard-000000.tar") as dst,
    ):
        original = {m.name: src.extractfile(m).read() for m in src.getmembers()}
        copied = {m.name: dst.extractfile(m).read() for m in dst.getmembers()}
    assert {n for n in original if not n.endswith("caption.txt")} == {
        n for n in copied if not n.endswith("caption.txt")
    }
    assert all(copied[n] == original[n] for n in copied if not n.endswith("caption.txt"))
    assert any(n.endswith(".taxonTag.txt") for n in copied)  # member names keep their case
    assert f"{first}.caption.txt" not in copied
    for uuid, caption in by_uuid.items():
        assert copied[f"{uuid}.caption.txt"].decode() == caption


def test_finished_units_get_their_missing_captioned_shard_on_rerun(toy_dir, tmp_path, fake_engine):
    captioner(fake_engine(), tmp_path, toy_dir).run(units_of(toy_dir)[:1])
    engine = fake_engine()
    captioner(engine, tmp_path, toy_dir, write_shards=tmp_path / "shards").run(
        units_of(toy_dir)[:1]
    )
    assert engine.calls == [] and (tmp_path / "shards" / "shard-000000.tar").is_file()


def test_catalog_input_reads_image_paths(toy_dir, tmp_path, fake_engine):
    samples = list(iter_samples(str(toy_dir / "train" / "shard-000000.tar")))
    (tmp_path / "img").mkdir()
    for s in samples[:5]:
        (tmp_path / "img" / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
    catalog = (
        schemas.CATALOG.read(toy_dir / "catalog.parquet")
        .filter(pl.col("uuid").is_in([s["__key__"] for s in samples[:6]]))
        .with_columns((pl.lit("img/") + pl.col("uuid") + ".jpg").alias("image_path"))
    )
    units = catalog_units(catalog, "catalog.parquet", tmp_path, rows_per_unit=4)
    assert [u.name for u in units] == ["part-000000", "part-000001"]
    engine = fake_engine()
    captioner(engine, tmp_path / "out", toy_dir).run(units)
    captions, errors = outputs(tmp_path / "out")
    assert sorted(captions["uuid"]) == sorted(s["__key__"] for s in samples[:5])
    missing = samples[5]["__key__"]
    assert errors["uuid"].to_list() == [missing]
    assert errors["reason"][0].startswith(
        f"unreadable image file: {tmp_path / 'img' / missing}.jpg"
    )
    assert engine.requests[samples[0]["__key__"]].image == samples[0]["jpg"]


def test_a_catalog_row_with_no_rank_left_after_cleaning_is_an_error_row(
    toy_dir, tmp_path, fake_engine
):
    """BioCLIP's cleaning empties placeholder ranks; such a row has no name to prompt with, and the
    rest go on."""
    samples = list(iter_samples(str(toy_dir / "train" / "shard-000000.tar")))[:3]
    (tmp_path / "img").mkdir()
    for s in samples:
        (tmp_path / "img" / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
    ranks = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    nameless = samples[1]["__key__"]
    catalog = (
        schemas.CATALOG.read(toy_dir / "catalog.parquet")
        .filter(pl.col("uuid").is_in([s["__key__"] for s in samples]))
        .with_columns(
            (pl.lit("img/") + pl.col("uuid") + ".jpg").alias("image_path"),
            *[
                pl.when(pl.col("uuid") == nameless)
                .then(pl.lit("Unknown"))
                .otherwise(pl.col(r))
                .alias(r)
                for r in ranks
            ],
            pl.when(pl.col("uuid") == nameless)
            .then(pl.lit(""))
            .otherwise(pl.col("common_name"))
            .alias("common_name"),
        )
    )
    engine = fake_engine()
    captioner(engine, tmp_path / "out", toy_dir, wiki=False).run(
        catalog_units(catalog, "catalog.parquet", tmp_path, rows_per_unit=8)
    )
    captions, errors = outputs(tmp_path / "out")
    assert sorted(captions["uuid"]) == sorted(
        s["__key__"] for s in samples if s["__key__"] != nameless
    )
    assert errors["uuid"].to_list() == [nameless]
    assert errors["reason"][0].startswith(
        "no taxonomic rank left after cleaning (catalog.parquet row"
    )
    assert nameless not in engine.requests


def test_uuid_level_descriptions_are_used_where_present(toy_dir, tmp_path, fake_engine):
    uuids = shard_uuids(toy_dir)[:10]
    wiki = tmp_path / "uuid_descriptions.parquet"
    pl.DataFrame(
        {
            "uuid": uuids[:4],
            "caption": ["x"] * 4,
            "description": ["A crawler with a striped shell. It is found under logs."] * 3 + [""],
        }
    ).write_parquet(wiki)
    engine = fake_engine()
    c = captioner(engine, tmp_path / "out", toy_dir, wiki=False)
    c.descriptions = load_descriptions(wiki)
    c.run(units_of(toy_dir)[:1])
    captions, _ = outputs(tmp_path / "out")
    used = dict(zip(captions["uuid"], captions["wiki_used"]))
    assert [used[u] for u in uuids] == [True] * 3 + [False] * 7
    assert (
        '"""A crawler with a striped shell. It is found under logs."""'
        in engine.requests[uuids[0]].instruction
    )


def test_species_level_descriptions_need_a_catalog(toy_dir):
    with pytest.raises(SchemaError, match="pass --catalog"):
        load_descriptions(toy_dir / "wiki" / "wiki_descriptions.parquet")


def test_shards_with_the_same_name_are_refused(toy_dir):
    with pytest.raises(ShardError, match="share the name 'shard-000000'"):
        shard_units(f"{toy_dir}/train/shard-000000.tar::{toy_dir}/val/shard-000000.tar")


@pytest.mark.parametrize("damage", ["cut-mid-member", "whole-samples-missing"])
def test_a_damaged_shard_is_reported_and_the_others_finish(toy_dir, tmp_path, fake_engine, damage):
    (tmp_path / "in").mkdir()
    for name in ("shard-000000.tar", "shard-000002.tar", "sizes.json"):
        (tmp_path / "in" / name).write_bytes((toy_dir / "train" / name).read_bytes())
    data = (toy_dir / "train" / "shard-000001.tar").read_bytes()
    if damage == "cut-mid-member":
        data = data[: len(data) // 2 + 100]
    else:  # a tar that ends cleanly but lacks samples: only sizes.json tells
        with tarfile.open(toy_dir / "train" / "shard-000001.tar") as src:
            members = src.getmembers()
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as dst:
                for m in members[: len(members) // 2]:
                    dst.addfile(m, src.extractfile(m))
        data = buf.getvalue()
    (tmp_path / "in" / "shard-000001.tar").write_bytes(data)
    report = captioner(fake_engine(), tmp_path / "out", toy_dir, wiki=False).run(
        shard_units(str(tmp_path / "in" / "shard-{000000..000002}.tar"))
    )
    assert report.finished == ["shard-000000", "shard-000002"] and list(report.failed) == [
        "shard-000001"
    ]
    assert not (tmp_path / "out" / "captions" / "shard-000001.parquet").exists()


def test_stats_summarise_a_run(toy_dir, tmp_path, fake_engine):
    uuids = shard_uuids(toy_dir)
    texts = {uuids[0]: "A small animal.", uuids[1]: " ".join(["long"] * 31)}
    engine = fake_engine(
        fail={uuids[2]: "HTTP 400: too big", uuids[3]: "HTTP 400: too big"}, texts=texts
    )
    captioner(engine, tmp_path, toy_dir).run(units_of(toy_dir))
    summary = summarize(tmp_path)
    assert summary["units_finished"] == 4 and summary["captions"] == 38 and summary["errors"] == 2
    assert summary["error_kinds"] == {"HTTP 400": 2}
    assert summary["names_species"] == round(36 / 38, 4)
    assert summary["flags"]["no_species_name"] == 2 and summary["flags"]["over_word_limit"] == 1
    assert summary["word_histogram"][">30"] == 1 and sum(summary["word_histogram"].values()) == 38


def preparing_engine(base):
    """``base`` (conftest's FakeEngine) with ``prepare``: see the class docstring."""

    class PreparingEngine(base):
        """A fake with ``prepare``; each ``generate`` blocks until the batch after its own is
        prepared (or ``wait`` seconds pass), and records whether it was. ``crash_on_call`` n raises
        KeyboardInterrupt (a kill) in the n-th ``generate``."""

        def __init__(self, wait: float = 1.0, crash_on_call: int | None = None):
            super().__init__()
            self.wait, self.crash_on_call = wait, crash_on_call
            self.prepared_batches = 0
            self.ahead: list[bool] = []
            self.changed = threading.Condition()
            self.prepare_threads: set[str] = set()

        def prepare(self, requests):
            self.prepare_threads.add(threading.current_thread().name)
            with self.changed:
                self.prepared_batches += 1
                self.changed.notify_all()
            return [replace(r, prepared=("ready", r.uuid)) for r in requests]

        def generate(self, requests):
            assert all(r.prepared == ("ready", r.uuid) for r in requests)
            call = len(self.calls) + 1
            with self.changed:
                self.ahead.append(
                    self.changed.wait_for(lambda: self.prepared_batches > call, timeout=self.wait)
                )
            if call == self.crash_on_call:
                raise KeyboardInterrupt
            return super().generate(requests)

    return PreparingEngine


def test_the_next_batch_is_prepared_while_one_generates(toy_dir, tmp_path, fake_engine):
    [unit] = units_of(toy_dir)[:1]
    engine = preparing_engine(fake_engine)()
    report = captioner(engine, tmp_path, toy_dir).run([unit])
    assert report.captions == 10
    # batches of 3, 3, 3, 1: each but the last found the next already prepared while it generated
    assert [len(call) for call in engine.calls] == [3, 3, 3, 1]
    assert engine.ahead == [True, True, True, False]
    assert engine.prepare_threads and threading.current_thread().name not in engine.prepare_threads


def test_a_kill_with_a_batch_prepared_ahead_still_resumes_exactly_once(
    toy_dir, tmp_path, fake_engine
):
    units = units_of(toy_dir)
    engine = preparing_engine(fake_engine)(
        wait=0.2, crash_on_call=6
    )  # the second unit's second batch
    with pytest.raises(KeyboardInterrupt):
        captioner(engine, tmp_path, toy_dir).run(units)
    assert engine.prepared_batches > 6  # the batch after the crash was prepared, never generated
    rerun = preparing_engine(fake_engine)(wait=0.2)
    captioner(rerun, tmp_path, toy_dir).run(units)
    captions, errors = outputs(tmp_path)
    assert sorted(captions["uuid"]) == sorted(shard_uuids(toy_dir)) and errors.height == 0
    assert sorted(u for call in engine.calls[:5] + rerun.calls for u in call) == sorted(
        shard_uuids(toy_dir)
    )


def test_one_ahead_makes_at_most_one_item_ahead_and_passes_errors_on():
    made = []

    def items():
        for i in range(4):
            made.append(i)
            if i == 3:
                raise ValueError("item 3 is bad")
            yield i

    got = []
    with pytest.raises(ValueError, match="item 3 is bad"):
        for item in one_ahead(items()):
            threading.Event().wait(0.05)  # give the thread time to run ahead, if it could
            assert len(made) <= item + 2
            got.append(item)
    assert got == [0, 1, 2]
