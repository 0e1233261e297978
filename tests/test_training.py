"""Tests of models.training: holdout split, full and continued training, scoring, input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshrank.config import TrainingConfig
from freshrank.errors import FeatureMismatchError, TrainingDataError
from models.evaluation import evaluate
from models.training import continue_training, predict, split_holdout, train_full, training_matrix, tree_count

FEATURES = ["affinity", "price", "popularity", "noise"]
CONFIG = TrainingConfig(full_train_trees=30, trees_per_day=5, max_depth=4, nthread=2, seed=7)
REPO_ROOT = Path(__file__).resolve().parents[1]


def make_rows(
    n_users: int = 80, days: tuple[str, ...] = ("2011-01-05",), items: int = 20, seed: int = 0, signal: str = "affinity"
) -> pd.DataFrame:
    """Build learnable training rows: the label follows ``signal`` minus price, plus noise.

    Each (day, user) group has ``items`` candidates and about 15% positives; ``popularity``
    is unknown (NaN) in one row out of ten.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for day in days:
        size = n_users * items
        frame = pd.DataFrame(
            {
                "user_id": np.repeat([f"u{index}" for index in range(n_users)], items),
                "item_id": np.tile([f"i{index}" for index in range(items)], n_users),
                "event_day": day,
                "affinity": rng.normal(size=size),
                "price": rng.normal(size=size),
                "popularity": rng.normal(size=size),
                "noise": rng.normal(size=size),
            }
        )
        latent = 2.0 * frame[signal] - frame["price"] + rng.normal(scale=0.5, size=size)
        frame["label"] = (latent > np.quantile(latent, 0.85)).astype(int)
        frame.loc[rng.random(size) < 0.1, "popularity"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _group_ids(rows: pd.DataFrame) -> np.ndarray:
    return (rows["event_day"] + "|" + rows["user_id"]).to_numpy()


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_rows()


@pytest.fixture(scope="module")
def champion(rows: pd.DataFrame):
    return train_full(rows, FEATURES, CONFIG)


# Holdout split


def test_split_keeps_each_user_on_one_side() -> None:
    rows = make_rows(n_users=200, days=("2011-01-05", "2011-01-06"), items=3)

    train, holdout = split_holdout(rows, 0.2, seed=7)

    assert set(train["user_id"]).isdisjoint(set(holdout["user_id"]))
    assert len(train) + len(holdout) == len(rows)
    assert sorted(train.index.tolist() + holdout.index.tolist()) == rows.index.tolist()
    assert 0.1 < holdout["user_id"].nunique() / 200 < 0.3


def test_split_is_stable_and_seeded() -> None:
    rows = make_rows(n_users=300, items=1)

    _, first = split_holdout(rows, 0.3, seed=7)
    _, again = split_holdout(rows, 0.3, seed=7)
    _, other_seed = split_holdout(rows, 0.3, seed=8)

    assert first["user_id"].tolist() == again["user_id"].tolist()
    assert set(first["user_id"]) != set(other_seed["user_id"])


def test_split_independent_of_python_hash_seed() -> None:
    rows = make_rows(n_users=50, items=1)
    _, holdout = split_holdout(rows, 0.3, seed=7)
    script = (
        "import json; from tests.test_training import make_rows; from models.training import split_holdout; "
        "_, h = split_holdout(make_rows(n_users=50, items=1), 0.3, seed=7); print(json.dumps(h['user_id'].tolist()))"
    )

    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        output = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(output) == holdout["user_id"].tolist()


def test_split_share_zero_holds_out_nothing() -> None:
    rows = make_rows(n_users=20, items=2)

    train, holdout = split_holdout(rows, 0.0, seed=7)

    assert len(holdout) == 0
    assert len(train) == len(rows)


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_split_rejects_invalid_share(share: float) -> None:
    with pytest.raises(TrainingDataError, match="holdout share"):
        split_holdout(make_rows(n_users=5, items=1), share, seed=7)


def test_split_rejects_null_user_id() -> None:
    rows = make_rows(n_users=5, items=2)
    rows.loc[3, "user_id"] = None

    with pytest.raises(TrainingDataError, match="1 training rows have a null user_id"):
        split_holdout(rows, 0.2, seed=7)


# Full training


def test_full_train_shape(champion, rows: pd.DataFrame) -> None:
    scores = predict(champion, rows, FEATURES)

    assert tree_count(champion) == CONFIG.full_train_trees
    assert champion.feature_names == FEATURES
    assert scores.shape == (len(rows),)
    assert scores.dtype == np.float64
    assert np.all((scores > 0.0) & (scores < 1.0))


def test_full_train_beats_random_on_holdout() -> None:
    rows = make_rows(n_users=300, seed=1)
    train, holdout = split_holdout(rows, 0.25, seed=7)
    booster = train_full(train, FEATURES, CONFIG)
    labels = holdout["label"].to_numpy()
    groups = _group_ids(holdout)

    model = evaluate(labels, predict(booster, holdout, FEATURES), groups, threshold=0.5)
    random_scores = np.random.default_rng(3).random(len(holdout))
    baseline = evaluate(labels, random_scores, groups, threshold=0.5)

    assert model["ndcg_at_10"] > baseline["ndcg_at_10"] + 0.3
    assert model["auc"] > 0.85


def test_full_train_is_deterministic(rows: pd.DataFrame, champion) -> None:
    again = train_full(rows, FEATURES, CONFIG)

    assert bytes(again.save_raw("ubj")) == bytes(champion.save_raw("ubj"))


def test_full_train_ignores_row_order() -> None:
    # 10,000 rows: enough that XGBoost itself gives different trees for shuffled input.
    rows = make_rows(n_users=500, seed=6)
    cfg = TrainingConfig(full_train_trees=5, max_depth=4, nthread=2, seed=7)

    ordered = train_full(rows, FEATURES, cfg)
    shuffled = train_full(rows.sample(frac=1.0, random_state=5), FEATURES, cfg)

    assert bytes(shuffled.save_raw("ubj")) == bytes(ordered.save_raw("ubj"))


def test_full_train_uses_config(rows: pd.DataFrame) -> None:
    cfg = TrainingConfig(full_train_trees=4, max_depth=2, learning_rate=0.3, nthread=1, seed=7)

    booster = train_full(rows, FEATURES, cfg)

    config = json.loads(booster.save_config())
    train_param = config["learner"]["gradient_booster"]["tree_train_param"]
    assert tree_count(booster) == 4
    assert float(train_param["eta"]) == pytest.approx(0.3)
    assert int(train_param["max_depth"]) == 2
    assert config["learner"]["objective"]["name"] == "binary:logistic"


@pytest.mark.parametrize("label", [0, 1])
def test_single_label_rows_raise(rows: pd.DataFrame, label: int) -> None:
    single = rows.assign(label=label)

    with pytest.raises(TrainingDataError, match=f"all {len(rows)} training rows have label {label}"):
        train_full(single, FEATURES, CONFIG)


def test_invalid_labels_raise(rows: pd.DataFrame) -> None:
    bad = rows.copy()
    bad.loc[[1, 2], "label"] = 2

    with pytest.raises(TrainingDataError, match="2 training rows have a label other than 0 or 1"):
        train_full(bad, FEATURES, CONFIG)


def test_empty_rows_raise(rows: pd.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match="no training rows"):
        train_full(rows.iloc[:0], FEATURES, CONFIG)


def test_missing_feature_column_raises(rows: pd.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match=r"missing the columns \['discount'\]"):
        train_full(rows, [*FEATURES, "discount"], CONFIG)


def test_missing_key_column_raises(rows: pd.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match=r"missing the columns \['event_day'\]"):
        train_full(rows.drop(columns=["event_day"]), FEATURES, CONFIG)


def test_non_numeric_feature_raises(rows: pd.DataFrame) -> None:
    bad = rows.assign(price=rows["price"].astype(str))

    with pytest.raises(TrainingDataError, match=r"not: \['price \(object\)'\]"):
        train_full(bad, FEATURES, CONFIG)


def test_infinite_feature_raises(rows: pd.DataFrame) -> None:
    bad = rows.copy()
    bad.loc[[0, 5, 9], "noise"] = np.inf

    with pytest.raises(TrainingDataError, match=r"\{'noise': 3\}"):
        train_full(bad, FEATURES, CONFIG)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ([], "feature_columns is empty"),
        (["price", "price"], r"lists \['price'\] more than once"),
        (["price", "label"], r"key or label columns \['label'\]"),
    ],
)
def test_invalid_feature_list_raises(rows: pd.DataFrame, columns: list[str], message: str) -> None:
    with pytest.raises(TrainingDataError, match=message):
        train_full(rows, columns, CONFIG)


# Continued training


def test_continue_adds_trees_and_keeps_champion(champion) -> None:
    before = bytes(champion.save_raw("ubj"))
    day_two = make_rows(days=("2011-01-06",), seed=2)

    continued = continue_training(champion, day_two, FEATURES, CONFIG)

    assert tree_count(continued) == CONFIG.full_train_trees + CONFIG.trees_per_day
    assert tree_count(champion) == CONFIG.full_train_trees
    assert bytes(champion.save_raw("ubj")) == before
    assert continued.feature_names == FEATURES


def test_continue_uses_continued_learning_rate(champion) -> None:
    continued = continue_training(champion, make_rows(days=("2011-01-06",), seed=2), FEATURES, CONFIG)

    config = json.loads(continued.save_config())
    parent_config = json.loads(champion.save_config())
    assert float(config["learner"]["gradient_booster"]["tree_train_param"]["eta"]) == pytest.approx(
        CONFIG.continued_learning_rate
    )
    assert (
        config["learner"]["learner_model_param"]["base_score"]
        == parent_config["learner"]["learner_model_param"]["base_score"]
    )


def test_continue_keeps_first_trees(champion) -> None:
    day_two = make_rows(days=("2011-01-06",), seed=2)

    continued = continue_training(champion, day_two, FEATURES, CONFIG)

    first_trees = continued[: CONFIG.full_train_trees]
    np.testing.assert_array_equal(
        predict(first_trees, day_two, FEATURES), predict(champion, day_two, FEATURES)
    )


def test_continue_is_deterministic(champion) -> None:
    day_two = make_rows(days=("2011-01-06",), seed=2)

    first = continue_training(champion, day_two, FEATURES, CONFIG)
    second = continue_training(champion, day_two.iloc[::-1], FEATURES, CONFIG)

    assert bytes(first.save_raw("ubj")) == bytes(second.save_raw("ubj"))


def test_continue_adapts_to_shifted_day(champion) -> None:
    # On day two the label follows "popularity" instead of "affinity".
    shifted = make_rows(days=("2011-01-06",), seed=4, signal="popularity")
    cfg = TrainingConfig(full_train_trees=30, trees_per_day=20, max_depth=4, nthread=2, continued_learning_rate=0.2)

    continued = continue_training(champion, shifted, FEATURES, cfg)

    labels = shifted["label"].to_numpy()
    groups = _group_ids(shifted)
    before = evaluate(labels, predict(champion, shifted, FEATURES), groups, 0.5)
    after = evaluate(labels, predict(continued, shifted, FEATURES), groups, 0.5)
    assert after["log_loss"] < before["log_loss"]
    assert after["ndcg_at_10"] > before["ndcg_at_10"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["affinity", "price", "popularity"], r"missing from the passed columns: \['noise'\]"),
        ([*FEATURES, "discount"], r"not in the model: \['discount'\]"),
        (["price", "affinity", "popularity", "noise"], "same columns in another order"),
    ],
)
def test_continue_rejects_feature_mismatch(champion, columns: list[str], message: str) -> None:
    day_two = make_rows(days=("2011-01-06",), seed=2).assign(discount=0.0)

    with pytest.raises(FeatureMismatchError, match=message):
        continue_training(champion, day_two, columns, CONFIG)


def test_continue_rejects_single_label_day(champion) -> None:
    day_two = make_rows(days=("2011-01-06",), seed=2).assign(label=0)

    with pytest.raises(TrainingDataError, match="have label 0"):
        continue_training(champion, day_two, FEATURES, CONFIG)


# Scoring


def test_predict_missing_column_raises(champion, rows: pd.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match=r"missing the columns \['price'\]"):
        predict(champion, rows.drop(columns=["price"]), FEATURES)


def test_predict_wrong_feature_order_raises(champion, rows: pd.DataFrame) -> None:
    with pytest.raises(FeatureMismatchError, match="another order"):
        predict(champion, rows, list(reversed(FEATURES)))


def test_predict_needs_no_label_or_keys(champion, rows: pd.DataFrame) -> None:
    features_only = rows[FEATURES]

    np.testing.assert_array_equal(predict(champion, features_only, FEATURES), predict(champion, rows, FEATURES))


def test_predict_empty_rows(champion, rows: pd.DataFrame) -> None:
    scores = predict(champion, rows.iloc[:0], FEATURES)

    assert scores.shape == (0,)


def test_predict_treats_nan_as_unknown(champion, rows: pd.DataFrame) -> None:
    unknown = rows.iloc[:5].assign(popularity=np.nan)

    scores = predict(champion, unknown, FEATURES)

    assert np.all(np.isfinite(scores))


# Training from a prepared matrix

def test_full_train_from_matrix_equals_rows(rows: pd.DataFrame, champion) -> None:
    from_matrix = train_full(training_matrix(rows, FEATURES, quantized=True), FEATURES, CONFIG)
    assert bytes(from_matrix.save_raw("ubj")) == bytes(champion.save_raw("ubj"))


def test_continue_from_matrix_equals_rows(champion) -> None:
    day_two = make_rows(days=("2011-01-06",), seed=2)
    from_rows = continue_training(champion, day_two, FEATURES, CONFIG)
    from_matrix = continue_training(champion, training_matrix(day_two, FEATURES), FEATURES, CONFIG)
    assert bytes(from_matrix.save_raw("ubj")) == bytes(from_rows.save_raw("ubj"))


def test_continue_rejects_quantized_matrix(champion) -> None:
    quantized = training_matrix(make_rows(days=("2011-01-06",), seed=2), FEATURES, quantized=True)
    with pytest.raises(TrainingDataError, match="exact feature values"):
        continue_training(champion, quantized, FEATURES, CONFIG)
