"""Ranking metrics, in numpy/torch so the package needs no scikit-learn at run time.

INQUIRE's definitions (its ``src/metrics.py``) are reproduced exactly, ties
included, as INQUIRE's functions would score a whole candidate list at ``k``:
AP is scikit-learn's ``average_precision_score`` over the top ``k``
re-normalised by ``min(count_pos, k)``; nDCG is ``ndcg_score(k=k)`` over the
whole list with the positives absent from it appended at the bottom; MRR is the
reciprocal rank of the first positive in the whole list (INQUIRE's ``mrr`` has
no ``k``); precision and recall count the positives in the top ``k``. Where an
order must be chosen among tied scores (MRR, the top-``k`` cut of AP,
precision and recall), ties keep the input order, as a stable sort does.

One deliberate difference: INQUIRE's AP cuts its list at position ``k`` as
given, which is the top ``k`` only when the list comes sorted by score (as its
full-ranking lists do); here the top ``k`` is always taken by score, so the
order candidates are stored in cannot change the number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def descending(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` high to low; tied scores keep their input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def average_precision(
    relevant: np.ndarray, scores: np.ndarray, count_pos: int | None = None, k: int | None = None
) -> float:
    """INQUIRE's AP at ``k`` (default: the list length) of a scored list.

    scikit-learn's AP over the top ``k`` by score (tied scores form one
    threshold), times positives-in-top-``k`` / ``min(count_pos, k)``, so positives
    below the cut or absent from the list lower it; 0 when the top ``k`` holds no
    positive. ``k`` may exceed the list: the normaliser still uses ``k``, as
    INQUIRE's does.
    """
    relevant, scores, k, in_list, count_pos = _scored_list(relevant, scores, k, count_pos)
    top = descending(scores)[:k]
    hits = np.cumsum(relevant[top])
    if not len(top) or hits[-1] == 0:
        return 0.0
    seen = np.arange(1, len(top) + 1)
    sorted_scores = scores[top]
    # the last position of each group of tied scores is one threshold
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp, n = hits[last], seen[last]
    gained = np.diff(np.r_[0.0, tp])
    # sklearn's AP is sum(gained / found * precision); INQUIRE rescales by found / min(count_pos, k)
    return float((gained * tp / n).sum() / min(count_pos, k))


def ndcg(
    relevant: np.ndarray, scores: np.ndarray, count_pos: int | None = None, k: int | None = None
) -> float:
    """INQUIRE's nDCG at ``k`` (default: the list length) of a whole scored list.

    Positives counted in ``count_pos`` but absent from the list are appended with
    score -100, as INQUIRE does, so they raise the ideal DCG. Tied scores share
    their positions' discounts (scikit-learn's tie-averaged DCG), so a group of
    ties straddling position ``k`` contributes the mean gain of the group to the
    positions above the cut. 0 when there is no positive at all.
    """
    relevant, scores, k, in_list, count_pos = _scored_list(relevant, scores, k, count_pos)
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


def _check_k(n: int, k: int | None) -> int:
    if k is None:
        return n
    if k < 1:
        raise ValueError(f"k={k}: the rank cut-off must be at least 1")
    return k


def _scored_list(relevant, scores, k: int | None, count_pos: int | None):
    """The list as float arrays, its cut-off ``k``, the positives in it and ``count_pos`` (default:
    those)."""
    relevant = np.asarray(relevant, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    k = _check_k(len(relevant), k)
    in_list = int(relevant.sum())
    count_pos = in_list if count_pos is None else count_pos
    if count_pos < in_list:
        raise ValueError(f"count_pos={count_pos} is below the {in_list} positive(s) in the list")
    return relevant, scores, k, in_list, count_pos


def reciprocal_rank(relevant: np.ndarray, scores: np.ndarray) -> float:
    """1 / rank of the first positive after sorting the whole list by score (0 when none)."""
    ranked = np.asarray(relevant)[descending(scores)]
    first = np.flatnonzero(ranked)
    return 1.0 / (first[0] + 1) if len(first) else 0.0


@dataclass(frozen=True)
class RerankScores:
    """One query's INQUIRE metrics (fractions) and its counts."""

    ap: float
    ndcg: float
    mrr: float
    precision: float
    recall: float
    n_candidates: int
    n_relevant: int


def rerank_metrics(
    relevant: np.ndarray, scores: np.ndarray, k: int | None = None, count_pos: int | None = None
) -> RerankScores:
    """INQUIRE's metrics of one query's scored candidates at ``k`` (default: all of them).

    ``count_pos`` is how many positives exist (default: the relevant candidates);
    more than the list holds, as in INQUIRE's full ranking, lowers AP, nDCG and
    recall for the positives the list never reached. Precision is the positives
    in the top ``k`` over ``k``, even when the list is shorter (it counts as
    padded with negatives, as AP's normaliser does). MRR ignores ``k``, as
    INQUIRE's ``mrr`` does.
    """
    relevant = np.asarray(relevant)
    scores = np.asarray(scores)
    k = _check_k(len(relevant), k)
    count_pos = int(relevant.sum()) if count_pos is None else count_pos
    found = int(np.asarray(relevant)[descending(scores)[:k]].sum())
    return RerankScores(
        ap=average_precision(relevant, scores, count_pos, k),
        ndcg=ndcg(relevant, scores, count_pos, k),
        mrr=reciprocal_rank(relevant, scores),
        precision=found / k,
        recall=found / count_pos if count_pos else 0.0,
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
        rows = similarity[start : start + block]
        own = index[start : start + rows.shape[0], None]
        truth = rows.gather(1, own)
        tied_before = (rows == truth) & (index[None, :] < own)
        ranks.append(((rows > truth) | tied_before).sum(dim=1))
    return torch.cat(ranks)


def recall_at_k(similarity: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """Share of rows whose own item (the diagonal) ranks in the top ``k``, for each ``k``."""
    rank = true_item_ranks(similarity)
    return {k: (rank < k).float().mean().item() for k in ks}
