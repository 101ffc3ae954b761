"""The per-step text type and the learning-rate schedule are pure functions of the step."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from biocap_core.taxonomy import TRAIN_TAXONOMIC_TYPES
from biocap_train.schedule import (
    StepText,
    TextSchedule,
    head_trained_by,
    learning_rate,
    text_type_for_step,
)


def test_text_type_depends_only_on_seed_and_step():
    first = [text_type_for_step(s, seed=7) for s in range(200)]
    assert first == [text_type_for_step(s, seed=7) for s in range(200)]
    assert first != [text_type_for_step(s, seed=8) for s in range(200)]
    assert set(first) == set(TRAIN_TAXONOMIC_TYPES) | {"caption"}


@pytest.mark.parametrize("share", [1 / 6, 0.5, 0.0, 1.0])
def test_caption_share_is_configurable(share):
    counts = Counter(head_trained_by(text_type_for_step(s, seed=0, caption_share=share))
                     for s in range(6000))
    assert counts["caption"] / 6000 == pytest.approx(share, abs=0.02)


def test_fixed_and_joint_text_types():
    assert {text_type_for_step(s, 0, text_type="sci_com") for s in range(50)} == {"sci_com"}
    joint = {text_type_for_step(s, 0, caption_share=0.9, joint=True) for s in range(300)}
    assert joint == set(TRAIN_TAXONOMIC_TYPES)


def test_a_step_text_names_the_texts_a_sample_gives_and_the_heads_it_trains():
    drawn = [text_type_for_step(s, 7) for s in range(100)]
    assert [TextSchedule(7).at(s).text_type for s in range(100)] == drawn
    assert (StepText("sci").members, StepText("sci").heads) == (("sci",), ("tax",))
    assert (StepText("caption").members, StepText("caption").heads) == (("caption",), ("caption",))
    joint = TextSchedule(0, caption_share=0.9, joint=True)
    assert {joint.at(s).members[1] for s in range(50)} == {"caption"}
    assert {joint.at(s).heads for s in range(50)} == {("tax", "caption")}


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    lrs = [learning_rate(s, 1e-3, warmup=10, total_steps=110) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(0.5e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)) * 1e-3)
    assert learning_rate(50, 1e-3, 10, 110, "const") == 1e-3
