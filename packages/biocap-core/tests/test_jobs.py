"""Splitting units across jobs, by flags or by SLURM array variables."""

from __future__ import annotations

import pytest

from biocap_core.jobs import JobSpecError, iter_select, job_from_env, resolve_job, select


def test_every_unit_goes_to_exactly_one_job():
    units = list(range(160))
    shares = [select(units, 12, i) for i in range(12)]
    assert sorted(u for share in shares for u in share) == units
    assert {len(s) for s in shares} == {13, 14}  # like the original's 12 jobs: 14 or 13 shards each


def test_slurm_array_variables_give_a_zero_based_index():
    assert job_from_env(
        {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "12"}
    ) == (12, 2)
    assert job_from_env(
        {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}
    ) == (8, 5)
    assert job_from_env({}) is None
    with pytest.raises(JobSpecError, match="SLURM"):
        job_from_env({"SLURM_ARRAY_TASK_ID": "x"})


def test_flags_win_over_slurm_and_are_checked():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_job(None, None, env) == (4, 1)
    assert resolve_job(2, 0, env) == (2, 0)
    assert resolve_job(None, None, {}) == (1, 0)
    with pytest.raises(JobSpecError, match="both"):
        resolve_job(2, None, {})
    with pytest.raises(JobSpecError, match="outside"):
        resolve_job(2, 2, {})


def test_a_job_whose_share_is_empty_starts_no_engine_and_writes_no_manifest(toy_dir, tmp_path):
    """The 12th task of a 12-task array over 4 shards has nothing to do: it must not load a
    model."""
    from biocap_captions.engines import EngineSettings
    from biocap_captions.pipeline import RunOptions
    from biocap_captions.runner import Inputs, run

    class NoEngine(EngineSettings):
        def build(self):
            raise AssertionError("the engine was started")

    report = run(
        Inputs(shards=str(toy_dir / "train" / "shard-{000000..000003}.tar")),
        NoEngine("vllm"),
        RunOptions(out=tmp_path / "out", progress=False),
        num_jobs=12,
        job_index=11,
    )
    assert (report.finished, report.captions) == ([], 0)
    assert (tmp_path / "out").is_dir() and not (tmp_path / "out" / "runs").exists()


def test_torchrun_ranks_split_like_shards_and_a_stream_like_its_list():
    assert job_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}) == (4, 3)
    slurm = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "0"}
    assert job_from_env({**slurm, "WORLD_SIZE": "8"}) == (2, 1)  # an array task's own split wins
    units = [f"photo-{i}.jpg" for i in range(23)]
    for i in range(3):
        assert list(iter_select(iter(units), 3, i)) == select(units, 3, i)
