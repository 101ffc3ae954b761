"""Ranking metrics, in numpy/torch so the package needs no scikit-learn at run time.

INQUIRE's definitions (its ``src/metrics.py``) are reproduced exactly, ties
included: AP is scikit-learn's ``average_precision_score`` over the top ``k``
re-normalised by ``min(count_pos, k)``; nDCG is ``ndcg_score`` at ``k`` with
the positives that missed the top ``k`` appended at the bottom; MRR is the
reciprocal rank of the first positive. Where an order must be chosen among
tied scores (MRR, the top-``k`` cut, recall), ties keep the input order, as a
stable sort does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def descending(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` high to low; tied scores keep their input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def average_precision(relevant: np.ndarray, scores: np.ndarray, count_pos: int | None = None) -> float:
    """INQUIRE's AP of a ranked list: scikit-learn's AP (tied scores form one threshold),
    times positives-in-list / ``min(count_pos, len(list))``; 0 when the list holds no positive."""
    relevant = np.asarray(relevant, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    k = len(relevant)
    in_list = int(relevant.sum())
    count_pos = in_list if count_pos is None else count_pos
    _check_count(in_list, count_pos)
    if in_list == 0:
        return 0.0
    order = descending(scores)
    hits = np.cumsum(relevant[order])
    seen = np.arange(1, k + 1)
    sorted_scores = scores[order]
    # the last position of each group of tied scores is one threshold
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp, n = hits[last], seen[last]
    gained = np.diff(np.r_[0.0, tp])
    # sklearn's AP is sum(gained / in_list * precision); INQUIRE rescales by in_list / min(count_pos, k)
    return float((gained * tp / n).sum() / min(count_pos, k))


def ndcg(relevant: np.ndarray, scores: np.ndarray, count_pos: int | None = None, k: int | None = None) -> float:
    """INQUIRE's nDCG at ``k`` (default: the list length) of a ranked list.

    Positives counted in ``count_pos`` but absent from the list are appended with
    score -100, as INQUIRE does, so they raise the ideal DCG. Tied scores share
    their positions' discounts (scikit-learn's tie-averaged DCG). 0 when there is
    no positive at all.
    """
    relevant = np.asarray(relevant, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    k = len(relevant) if k is None else k
    in_list = int(relevant.sum())
    count_pos = in_list if count_pos is None else count_pos
    _check_count(in_list, count_pos)
    missed = count_pos - in_list
    relevant = np.r_[relevant, np.ones(missed)]
    scores = np.r_[scores, np.full(missed, -100.0)]
    discount = 1.0 / np.log2(np.arange(len(relevant)) + 2.0)
    discount[k:] = 0.0
    ideal = discount[:count_pos].sum()
    if ideal == 0:
        return 0.0
    _, group, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    mean_gain = np.zeros(len(counts))
    np.add.at(mean_gain, group, relevant)
    mean_gain /= counts
    ends = np.cumsum(counts)
    cumulative = np.r_[0.0, np.cumsum(discount)]
    group_discount = cumulative[ends] - cumulative[ends - counts]
    return float((mean_gain * group_discount).sum() / ideal)


def _check_count(in_list: int, count_pos: int) -> None:
    if count_pos < in_list:
        raise ValueError(f"count_pos={count_pos} is below the {in_list} positive(s) in the list")


def reciprocal_rank(relevant: np.ndarray, scores: np.ndarray) -> float:
    """1 / rank of the first positive after sorting by score (0 when none)."""
    ranked = np.asarray(relevant)[descending(scores)]
    first = np.flatnonzero(ranked)
    return 1.0 / (first[0] + 1) if len(first) else 0.0


@dataclass(frozen=True)
class RerankScores:
    """One query's INQUIRE metrics (fractions) and its counts."""

    ap: float
    ndcg: float
    mrr: float
    n_candidates: int
    n_relevant: int


def rerank_metrics(relevant: np.ndarray, scores: np.ndarray, k: int | None = None) -> RerankScores:
    """INQUIRE-Rerank metrics of one query over its fixed candidates.

    The candidates are ranked by score and cut to the top ``k`` (default: all of
    them, as the original script); every relevant candidate counts as a positive
    (``count_pos``), so positives below the cut lower AP and nDCG.
    """
    relevant = np.asarray(relevant)
    scores = np.asarray(scores)
    k = len(relevant) if k is None else min(k, len(relevant))
    top = descending(scores)[:k]
    count_pos = int(relevant.sum())
    return RerankScores(
        ap=average_precision(relevant[top], scores[top], count_pos),
        ndcg=ndcg(relevant[top], scores[top], count_pos, k),
        mrr=reciprocal_rank(relevant[top], scores[top]),
        n_candidates=len(relevant),
        n_relevant=count_pos,
    )


def true_item_ranks(similarity: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """0-based rank of item ``i`` in row ``i`` of a (N, N) score matrix, for every row.

    An item ranks below every item with a higher score and every tied item that
    comes before it (a stable sort), so duplicated captions cannot all claim rank 1.
    Rows go in blocks so the (N, N) comparison never sits in memory at once.
    """
    n = similarity.shape[0]
    if similarity.shape != (n, n):
        raise ValueError(f"expected a square similarity matrix, got {tuple(similarity.shape)}")
    index = torch.arange(n, device=similarity.device)
    ranks = []
    for start in range(0, n, block):
        rows = similarity[start:start + block]
        own = index[start:start + rows.shape[0], None]
        truth = rows.gather(1, own)
        tied_before = (rows == truth) & (index[None, :] < own)
        ranks.append(((rows > truth) | tied_before).sum(dim=1))
    return torch.cat(ranks)


def recall_at_k(similarity: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """Share of rows whose own item (the diagonal) ranks in the top ``k``, for each ``k``."""
    rank = true_item_ranks(similarity)
    return {k: (rank < k).float().mean().item() for k in ks}
