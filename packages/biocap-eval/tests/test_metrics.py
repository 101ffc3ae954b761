"""Metrics against independent references: scikit-learn (as INQUIRE calls it) and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biocap_eval.metrics import (
    average_precision,
    ndcg,
    recall_at_k,
    reciprocal_rank,
    rerank_metrics,
    true_item_ranks,
)


def _sklearn():
    """sklearn.metrics, the reference: imported by the tests that use it, not at collection, where
    each pytest-xdist worker would pay its 1.4 s (with pandas and scipy)."""
    from sklearn import metrics

    return metrics


def inquire_reference(y_true: np.ndarray, y_pred: np.ndarray, count_pos: int, k: int):
    """INQUIRE's src/metrics.py restated with scikit-learn: ap_at_k, ndcg_at_k and mrr called on a
    whole list at k, precision and recall as compute_retrieval_metrics counts them over the top k.

    The list must come sorted by score (ties in the order they should keep): INQUIRE's AP cuts by
    position, and its mrr's unstable argsort would otherwise pick an arbitrary order among ties.
    """
    found = int(y_true[:k].sum())
    ap = (
        _sklearn().average_precision_score(y_true[:k], y_pred[:k]) * found / min(count_pos, k)
        if found
        else 0.0
    )
    missed = count_pos - int(y_true.sum())
    if count_pos:
        nd = _sklearn().ndcg_score(
            [y_true.tolist() + [1] * missed], [y_pred.tolist() + [-100] * missed], k=k
        )
    else:
        nd = 0.0
    first = np.flatnonzero(y_true)
    mrr = 1 / (first[0] + 1) if len(first) else 0.0
    return {
        "ap": ap,
        "ndcg": nd,
        "mrr": mrr,
        "precision": found / k,
        "recall": found / count_pos if count_pos else 0.0,
    }


def by_score(relevant: np.ndarray, scores: np.ndarray):
    order = np.argsort(-scores, kind="stable")
    return relevant[order], scores[order]


def assert_matches(got, expected: dict):
    for name, value in expected.items():
        assert getattr(got, name) == pytest.approx(value, abs=1e-12), name


def random_lists(seed: int):
    """Lists with heavy ties (scores on a coarse grid), some with no positive, some all positive."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        n = int(rng.integers(2, 40))
        if rng.random() < 0.6:
            scores = rng.integers(0, int(rng.integers(1, 8)), n).astype(float) / 4
        else:
            scores = rng.normal(size=n)
        p = rng.choice([0.0, 0.2, 0.5, 1.0])
        relevant = (rng.random(n) < p).astype(int)
        yield relevant, scores


@pytest.mark.parametrize("seed", [0, 1])
def test_rerank_metrics_match_inquire_with_sklearn_on_all_candidates(seed):
    for relevant, scores in random_lists(seed):
        got = rerank_metrics(relevant, scores)
        assert_matches(
            got, inquire_reference(*by_score(relevant, scores), int(relevant.sum()), len(relevant))
        )


@pytest.mark.parametrize("seed", [2, 3])
def test_rerank_metrics_at_k_match_inquire_with_sklearn(seed):
    """k below and above the list length, count_pos at and above the list's positives, ties across
    the cut."""
    rng = np.random.default_rng(seed)
    for relevant, scores in random_lists(seed):
        n, in_list = len(relevant), int(relevant.sum())
        for k in (1, max(2, n // 3), n, n + 7):
            for count_pos in (in_list, in_list + int(rng.integers(1, 60))):
                got = rerank_metrics(relevant, scores, k=k, count_pos=count_pos)
                assert_matches(got, inquire_reference(*by_score(relevant, scores), count_pos, k))
                assert got.n_relevant == count_pos


def test_mrr_ranks_the_whole_list_whatever_k():
    relevant = np.zeros(50, dtype=int)
    relevant[35] = 1
    scores = -np.arange(50.0)  # candidate i ranks i + 1
    assert rerank_metrics(relevant, scores, k=10).mrr == pytest.approx(1 / 36)


def test_ndcg_at_k_averages_tied_gains_across_the_cut():
    # the positive ties with a negative at ranks 2-3; the cut at 2 keeps half of the group's gain
    relevant, scores = np.array([0, 0, 1]), np.array([0.9, 0.5, 0.5])
    got = rerank_metrics(relevant, scores, k=2)
    assert (
        got.ndcg
        == pytest.approx(_sklearn().ndcg_score([relevant], [scores], k=2))
        == pytest.approx(0.5 / np.log2(3))
    )
    assert (got.precision, got.recall) == (0.0, 0.0)  # the stable order puts the negative first


def test_k_above_the_list_keeps_k_in_the_normaliser_and_the_missing_positives():
    # 4 candidates, 2 positive, 6 positives exist (as in a full ranking), k = 10
    relevant, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    got = rerank_metrics(relevant, scores, k=10, count_pos=6)
    assert got.ap == pytest.approx((1 + 2 / 3) / 6)
    discount = 1 / np.log2(np.arange(8) + 2)
    dcg = (
        discount[0] + discount[2] + discount[4:8].sum()
    )  # the 4 stand-ins rank 5-8, inside the top 10
    ideal = discount[:6].sum()
    assert got.ndcg == pytest.approx(dcg / ideal)
    assert (got.precision, got.recall) == (pytest.approx(2 / 10), pytest.approx(2 / 6))


def test_missed_positives_lower_ap_and_ndcg_by_hand():
    # top-2 of 4 candidates; 2 positives, one ranked first, one cut off
    relevant, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.0])
    got = rerank_metrics(relevant, scores, k=2)
    assert got.ap == pytest.approx(0.5)  # plain AP within the list is 1, times 1 / min(2, 2)
    assert got.ndcg == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert got.mrr == 1.0
    assert rerank_metrics(relevant, scores).ap == pytest.approx((1 + 2 / 3) / 2)
    assert (got.precision, got.recall) == (0.5, 0.5)


def test_no_positive_gives_zero_and_count_below_the_list_is_refused():
    assert rerank_metrics(np.zeros(5), np.arange(5.0)) == rerank_metrics(np.zeros(5), np.zeros(5))
    assert (average_precision(np.zeros(3), np.ones(3)), ndcg(np.zeros(3), np.ones(3))) == (0.0, 0.0)
    assert reciprocal_rank(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(ValueError, match="count_pos=1"):
        average_precision(np.array([1, 1]), np.array([0.3, 0.2]), count_pos=1)
    with pytest.raises(ValueError, match="k=0"):
        rerank_metrics(np.array([1, 0]), np.array([0.3, 0.2]), k=0)


def test_ties_share_a_threshold_in_ap_and_keep_input_order_in_mrr():
    relevant, scores = np.array([0, 1]), np.array([0.5, 0.5])
    assert (
        average_precision(relevant, scores)
        == pytest.approx(_sklearn().average_precision_score(relevant, scores))
        == 0.5
    )
    assert reciprocal_rank(relevant, scores) == 0.5  # the tied negative comes first
    assert ndcg(relevant, scores) == pytest.approx(_sklearn().ndcg_score([relevant], [scores]))


def brute_force_recall(sim: np.ndarray, k: int) -> float:
    """Row i is a hit when fewer than k items come before item i in a stable descending sort."""
    hits = [list(np.argsort(-row, kind="stable")).index(i) < k for i, row in enumerate(sim)]
    return float(np.mean(hits))


@pytest.mark.parametrize("seed", range(4))
def test_recall_matches_brute_force_with_duplicate_items(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    texts = rng.normal(size=(n, 8))
    dup = rng.choice(n, size=n // 3, replace=False)
    texts[dup] = texts[rng.choice(n, size=len(dup))]  # identical captions give exactly tied scores
    images = rng.normal(size=(n, 8))
    sim = images @ texts.T
    if seed == 3:
        sim = np.round(sim)  # coarse scores: ties everywhere
    t = torch.from_numpy(sim)
    for direction in (sim, sim.T):
        got = recall_at_k(torch.from_numpy(np.ascontiguousarray(direction)), ks=(1, 5, 10))
        assert got == {k: pytest.approx(brute_force_recall(direction, k)) for k in (1, 5, 10)}
    assert torch.equal(true_item_ranks(t, block=7), true_item_ranks(t))


def test_identical_items_cannot_both_rank_first():
    sim = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert true_item_ranks(sim).tolist() == [0, 1]
    assert recall_at_k(sim, ks=(1, 2)) == {1: 0.5, 2: 1.0}
