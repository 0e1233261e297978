"""Tests of models.evaluation: ranking and threshold metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation import evaluate, group_ranking_metrics


def _log2_discount(rank: int) -> float:
    """Return the DCG discount of a 1-based rank."""
    return 1.0 / math.log2(rank + 1)


def test_ndcg_one_group_by_hand() -> None:
    # Ranked by score the labels read 0, 1, 0, 1: positives at ranks 2 and 4.
    result = evaluate(np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6]), np.array(["g"] * 4), 0.5)

    dcg = _log2_discount(2) + _log2_discount(4)
    ideal = _log2_discount(1) + _log2_discount(2)
    assert result["ndcg_at_10"] == pytest.approx(dcg / ideal)
    assert result["ndcg_at_10"] == pytest.approx(0.650921, abs=1e-6)
    assert result["recall_at_10"] == pytest.approx(1.0)


def test_cutoff_k_limits_ndcg_and_recall() -> None:
    result = evaluate(np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6]), np.array(["g"] * 4), 0.5, k=2)

    # The top 2 contains one of two positives, at rank 2. The ideal top 2 contains both.
    expected_ndcg = _log2_discount(2) / (_log2_discount(1) + _log2_discount(2))
    assert result["ndcg_at_2"] == pytest.approx(expected_ndcg)
    assert result["recall_at_2"] == pytest.approx(0.5)
    assert "ndcg_at_10" not in result


def test_groups_without_positives_are_skipped() -> None:
    # Group a: its one positive ranked first (NDCG 1). Group b: no positive (skipped).
    # Group c: its one positive ranked third of three (NDCG 1/log2(4) = 0.5).
    # Rows of the groups are interleaved on purpose.
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.3, 0.9, 0.2, 0.7, 0.6, 0.1])
    groups = np.array(["a", "c", "a", "c", "b", "b", "a", "c"])

    result = evaluate(labels, scores, groups, 0.5, k=2)

    assert result["groups"] == 3
    assert result["groups_with_positives"] == 2
    assert result["ndcg_at_2"] == pytest.approx(0.5)  # group c's positive is outside the top 2
    assert result["recall_at_2"] == pytest.approx(0.5)

    result_k10 = evaluate(labels, scores, groups, 0.5)
    assert result_k10["ndcg_at_10"] == pytest.approx((1.0 + 0.5) / 2)
    assert result_k10["recall_at_10"] == pytest.approx(1.0)


def test_more_positives_than_k() -> None:
    # Three positives, k = 2, ranked 1, 3, 4: the ideal top 2 has two positives.
    labels = np.array([1, 0, 1, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    result = evaluate(labels, scores, np.zeros(4, dtype=int), 0.5, k=2)

    ideal = _log2_discount(1) + _log2_discount(2)
    assert result["ndcg_at_2"] == pytest.approx(1.0 / ideal)
    assert result["recall_at_2"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("labels", "expected_ndcg"),
    [
        ([1, 0, 0], 1.0),  # the first of equal scores ranks first
        ([0, 0, 1], 0.5),  # the last ranks third: 1 / log2(4)
    ],
)
def test_ties_keep_row_order(labels: list[int], expected_ndcg: float) -> None:
    result = evaluate(np.array(labels), np.array([0.4, 0.4, 0.4]), np.array(["g", "g", "g"]), 0.5)

    assert result["ndcg_at_10"] == pytest.approx(expected_ndcg)


def test_perfect_and_reversed_ranking() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    groups = np.array([7] * 5)

    perfect = evaluate(labels, np.array([0.9, 0.8, 0.3, 0.2, 0.1]), groups, 0.5)
    reversed_ = evaluate(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9]), groups, 0.5)

    assert perfect["ndcg_at_10"] == pytest.approx(1.0)
    assert perfect["auc"] == pytest.approx(1.0)
    expected_reversed = (_log2_discount(4) + _log2_discount(5)) / (_log2_discount(1) + _log2_discount(2))
    assert reversed_["ndcg_at_10"] == pytest.approx(expected_reversed)
    assert reversed_["auc"] == pytest.approx(0.0)


def test_auc_and_log_loss_by_hand() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])

    result = evaluate(labels, scores, np.array(["a", "a", "b", "b"]), 0.5)

    # Of the 4 (positive, negative) pairs, only (0.35, 0.4) is ordered wrongly.
    assert result["auc"] == pytest.approx(0.75)
    expected_log_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert result["log_loss"] == pytest.approx(expected_log_loss)
    assert result["rows"] == 4
    assert result["positives"] == 2


def test_one_class_gives_none_not_zero() -> None:
    result = evaluate(np.zeros(4, dtype=int), np.array([0.1, 0.7, 0.2, 0.3]), np.array([1, 1, 2, 2]), 0.5)

    assert result["auc"] is None
    assert result["ndcg_at_10"] is None
    assert result["recall_at_10"] is None
    assert result["recall"] is None
    assert result["groups_with_positives"] == 0
    assert result["precision"] == pytest.approx(0.0)  # one predicted positive, and it is wrong
    assert result["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.3) + math.log(0.8) + math.log(0.7)) / 4)


@pytest.mark.parametrize(
    ("threshold", "precision", "recall", "f1"),
    [
        (0.5, 0.5, 0.5, 0.5),  # predicted: 0.9, 0.6; a score equal to the threshold is not above it
        (0.4, 2 / 3, 1.0, 0.8),  # predicted: 0.9, 0.6, 0.5
        (0.1, 0.5, 1.0, 2 / 3),  # everything predicted positive
        (0.95, None, 0.0, 0.0),  # nothing predicted positive: precision undefined
    ],
)
def test_threshold_metrics(threshold: float, precision: float | None, recall: float, f1: float) -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.6, 0.5, 0.2])

    result = evaluate(labels, scores, np.array(["g"] * 4), threshold)

    assert result["threshold"] == threshold
    if precision is None:
        assert result["precision"] is None
    else:
        assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(f1)


def test_result_values_are_plain_python() -> None:
    result = evaluate(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.6], dtype=np.float32), np.array([1, 1, 2]), 0.5)

    for key, value in result.items():
        assert value is None or type(value) in (int, float), f"{key} is {type(value).__name__}"


@pytest.mark.parametrize(
    ("labels", "scores", "groups", "k", "message"),
    [
        ([0, 1], [0.1], ["a", "a"], 10, "lengths"),
        ([], [], [], 10, "no rows"),
        ([0, 2], [0.1, 0.2], ["a", "a"], 10, "not 0 or 1"),
        ([0, 1], [0.1, float("nan")], ["a", "a"], 10, "not probabilities"),
        ([0, 1], [0.1, 1.5], ["a", "a"], 10, "not probabilities"),
        ([0, 1], [-2.0, 0.5], ["a", "a"], 10, "margins"),
        ([0, 1], [0.1, 0.2], ["a", "a"], 0, "k must be"),
    ],
)
def test_invalid_input_raises(
    labels: list, scores: list, groups: list, k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(np.array(labels), np.array(scores), np.array(groups), 0.5, k=k)


def test_group_metrics_equal_each_group_alone() -> None:
    rng = np.random.default_rng(3)
    groups = np.array([f"g{index % 7}" for index in range(140)])
    labels = (rng.random(140) < 0.2).astype(int)
    labels[groups == "g3"] = 0
    # Rounded scores make ties, which keep the row order within a group.
    scores = np.round(rng.random(140), 1)

    per_group = group_ranking_metrics(labels, scores, groups)

    for position, group in enumerate(sorted(set(groups))):
        members = groups == group
        alone = evaluate(labels[members], scores[members], groups[members], 0.5)
        if group == "g3":
            assert not per_group["ranked"][position]
            assert math.isnan(per_group["ndcg"][position])
        else:
            assert per_group["ndcg"][position] == alone["ndcg_at_10"]
            assert per_group["recall"][position] == alone["recall_at_10"]
