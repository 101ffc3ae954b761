"""Splitting units across jobs, by flags or by SLURM array variables."""

from __future__ import annotations

import pytest
from biocap_captions.jobs import JobSpecError, job_from_env, resolve_job, select


def test_every_unit_goes_to_exactly_one_job():
    units = list(range(160))
    shares = [select(units, 12, i) for i in range(12)]
    assert sorted(u for share in shares for u in share) == units
    assert {len(s) for s in shares} == {13, 14}  # like the original's 12 jobs: 14 or 13 shards each


def test_slurm_array_variables_give_a_zero_based_index():
    assert job_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "12"}) == (12, 2)
    assert job_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}) == (8, 5)
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
