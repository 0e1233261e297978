"""Ranking and classification metrics of purchase scores over query groups.

A query group is the candidate items of one user on one day. Ranking metrics (NDCG@k,
recall@k) are averaged over the groups that contain at least one purchase, because a
group without purchases has no ideal ranking. Classification metrics (AUC, log loss,
precision, recall, F1) are computed over all rows. A metric that is undefined for the
given data is None, never a placeholder number.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

logger = logging.getLogger(__name__)


def evaluate(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, k: int = 10
) -> dict:
    """Compute the metrics of scored rows.

    Within a group, items are ranked by score, highest first. Equal scores keep the order
    of the rows in the input, so the result is deterministic.

    Args:
        labels: 0/1 purchase labels, one per row.
        scores: Purchase probabilities in [0, 1], one per row.
        groups: Query group id of each row (any hashable values, e.g. "day|user").
        threshold: Operating threshold: a row with a score above it counts as predicted positive.
        k: Rank cutoff of NDCG and recall.

    Returns:
        A dict of plain Python numbers (JSON-ready): ``rows``, ``groups``, ``positives``,
        ``groups_with_positives``, ``auc`` (None with one class), ``log_loss``,
        ``ndcg_at_<k>`` and ``recall_at_<k>`` (None without a group that has a positive),
        ``precision`` (None without predicted positives), ``recall`` (None without
        positives) and ``f1`` (None when there are neither positives nor predicted positives).

    Raises:
        ValueError: Arrays differ in length or are empty, labels are not 0/1, scores are not
            finite probabilities, or ``k`` is below 1.
    """
    labels, scores, groups = _validated(labels, scores, groups, k)
    group_codes, group_count = _group_codes(groups)
    ranking = _ranking_metrics(labels, scores, group_codes, group_count, k)

    positives = int(labels.sum())
    result: dict = {
        "rows": int(len(labels)),
        "groups": group_count,
        "positives": positives,
        "groups_with_positives": ranking["groups_with_positives"],
        "auc": _auc(labels, scores),
        "log_loss": float(log_loss(labels, scores, labels=[0, 1])),
        f"ndcg_at_{k}": ranking["ndcg"],
        f"recall_at_{k}": ranking["recall"],
    }
    result.update(_threshold_metrics(labels, scores, threshold))
    logger.debug("evaluation: %s", result)
    return result


def _validated(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    lengths = {"labels": len(labels), "scores": len(scores), "groups": len(groups)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"labels, scores and groups must have one entry per row, got lengths {lengths}")
    if len(labels) == 0:
        raise ValueError("there are no rows to evaluate; check that the holdout or evaluation day has rows")
    invalid_labels = ~np.isin(labels, [0, 1])
    if invalid_labels.any():
        raise ValueError(
            f"{int(invalid_labels.sum())} labels are not 0 or 1 (e.g. {labels[invalid_labels][:5].tolist()})"
        )
    invalid_scores = ~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0)
    if invalid_scores.any():
        raise ValueError(
            f"{int(invalid_scores.sum())} scores are not probabilities in [0, 1] "
            f"(e.g. {scores[invalid_scores][:5].tolist()}); pass the model's probabilities, not margins"
        )
    return labels.astype(np.int64), scores, groups


def _group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Return a dense integer code per row and the number of distinct groups."""
    unique, codes = np.unique(groups, return_inverse=True)
    return codes.reshape(-1), int(len(unique))


def group_ranking_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Return NDCG@k and recall@k of every query group, groups in sorted order of their ids.

    A group's values are what ``evaluate`` gives for that group's rows alone, computed for
    all groups in one pass. Groups without a positive have no ideal ranking: their values
    are NaN and ``ranked`` is False.

    Raises:
        ValueError: As ``evaluate``.
    """
    labels, scores, groups = _validated(labels, scores, groups, k)
    group_codes, group_count = _group_codes(groups)
    return _per_group(labels, scores, group_codes, group_count, k)


def _per_group(labels: np.ndarray, scores: np.ndarray, group_codes: np.ndarray, group_count: int, k: int) -> dict[str, np.ndarray]:
    """Compute NDCG@k and recall@k per group; NDCG uses binary gains and a log2(rank + 1) discount, ranks from 1.

    The ideal DCG places all of the group's positives first. Recall@k is the share of the
    group's positives that are in its top k.
    """
    row_order = np.arange(len(labels))
    # np.lexsort sorts by the last key first: group, then score descending, then row order.
    order = np.lexsort((row_order, -scores, group_codes))
    sorted_codes = group_codes[order]
    sorted_labels = labels[order].astype(np.float64)

    group_starts = np.searchsorted(sorted_codes, np.arange(group_count))
    positions = row_order - group_starts[sorted_codes]
    in_top_k = positions < k
    discounts = 1.0 / np.log2(positions + 2.0)

    dcg = np.bincount(sorted_codes, weights=sorted_labels * discounts * in_top_k, minlength=group_count)
    hits = np.bincount(sorted_codes, weights=sorted_labels * in_top_k, minlength=group_count)
    group_positives = np.bincount(sorted_codes, weights=sorted_labels, minlength=group_count)

    # ideal_dcg_by_count[n] is the DCG of n positives ranked first, for n = 0..k.
    ideal_dcg_by_count = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))))
    ideal_dcg = ideal_dcg_by_count[np.minimum(group_positives, k).astype(np.int64)]

    ranked = group_positives > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(ranked, dcg / ideal_dcg, np.nan)
        recall = np.where(ranked, hits / group_positives, np.nan)
    return {"ndcg": ndcg, "recall": recall, "ranked": ranked}


def _ranking_metrics(
    labels: np.ndarray, scores: np.ndarray, group_codes: np.ndarray, group_count: int, k: int
) -> dict:
    """Compute mean NDCG@k and recall@k over groups with at least one positive (see ``_per_group``)."""
    per_group = _per_group(labels, scores, group_codes, group_count, k)
    ranked = per_group["ranked"]
    ranked_count = int(ranked.sum())
    if ranked_count == 0:
        return {"ndcg": None, "recall": None, "groups_with_positives": 0}
    return {
        "ndcg": float(np.mean(per_group["ndcg"][ranked])),
        "recall": float(np.mean(per_group["recall"][ranked])),
        "groups_with_positives": ranked_count,
    }


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    predicted = scores > threshold
    actual = labels == 1
    true_positives = int(np.sum(predicted & actual))
    false_positives = int(np.sum(predicted & ~actual))
    false_negatives = int(np.sum(~predicted & actual))

    predicted_count = true_positives + false_positives
    actual_count = true_positives + false_negatives
    f1_denominator = 2 * true_positives + false_positives + false_negatives
    return {
        "threshold": float(threshold),
        "precision": true_positives / predicted_count if predicted_count else None,
        "recall": true_positives / actual_count if actual_count else None,
        "f1": 2 * true_positives / f1_denominator if f1_denominator else None,
    }
