"""The margin store of continued boosting: same models as XGBoost's own continuation, and safe reuse."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from freshrank.config import TrainingConfig
from freshrank.errors import TrainingDataError
from models.margins import MarginStore, ParentModel, base_margins, full_margins, row_key_hashes
from models.training import (
    append_trees,
    continue_from_margins,
    continue_training,
    sorted_training_arrays,
    train_full,
    training_matrix,
)

FEATURES = ["f0", "f1", "f2", "f3"]
CONFIG = TrainingConfig(full_train_trees=12, trees_per_day=4, max_depth=4, nthread=1)


def _rows(days: list[str], users: int = 60, items: int = 20, seed: int = 3) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    frames = []
    for day in days:
        frame = pd.DataFrame(
            {
                "event_day": day,
                "user_id": [f"u{index % users}" for index in range(users * 5)],
                "item_id": [f"i{generator.integers(items)}-{index}" for index in range(users * 5)],
            }
        )
        for name in FEATURES:
            frame[name] = generator.normal(size=len(frame))
        frame.loc[generator.random(len(frame)) < 0.1, "f2"] = np.nan
        signal = frame["f0"] - 0.5 * frame["f1"] + generator.normal(scale=0.5, size=len(frame))
        frame["label"] = (signal > 1.0).astype(int)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _sha(booster: xgb.Booster) -> str:
    return hashlib.sha256(booster.save_raw("ubj")).hexdigest()


def _parent(booster: xgb.Booster, version: str, ancestors: dict[str, xgb.Booster] | None = None) -> ParentModel:
    chain = {name: _sha(model) for name, model in (ancestors or {}).items()}
    chain[version] = _sha(booster)
    return ParentModel(booster, version, chain)


def _margins(store: MarginStore, parent: ParentModel, rows: pd.DataFrame, fingerprint: str = "a") -> tuple:
    matrix, _, order = sorted_training_arrays(rows, FEATURES)
    keys = rows.iloc[order]
    days = keys["event_day"].astype(str).to_numpy()
    fingerprints = {pd.Timestamp(day).date(): fingerprint for day in set(days)}
    return (*base_margins(store, parent, matrix, row_key_hashes(keys[["user_id", "item_id"]]), days, fingerprints), matrix)


@pytest.fixture(scope="module")
def champion() -> xgb.Booster:
    return train_full(_rows(["2024-01-01", "2024-01-02"], seed=1), FEATURES, CONFIG)


def test_margin_round_equals_xgboost_continuation(champion, tmp_path):
    rows = _rows(["2024-01-02", "2024-01-03"])
    expected = continue_training(champion, rows, FEATURES, CONFIG)
    margins, stats, matrix = _margins(MarginStore(tmp_path), _parent(champion, "v1"), rows)
    _, labels, _ = sorted_training_arrays(rows, FEATURES)
    dtrain = xgb.DMatrix(matrix, label=labels, base_margin=margins, feature_names=FEATURES)
    model = continue_from_margins(champion, dtrain, FEATURES, CONFIG)
    assert stats.predicted_rows == len(rows)
    assert stats.stored_rows == 0
    assert model.num_boosted_rounds() == champion.num_boosted_rounds() + CONFIG.trees_per_day
    assert model.save_raw("ubj") == expected.save_raw("ubj")


def test_append_trees_keeps_the_base_model(champion):
    rows = _rows(["2024-01-03"])
    matrix, labels, _ = sorted_training_arrays(rows, FEATURES)
    dtrain = xgb.DMatrix(matrix, label=labels, base_margin=full_margins(champion, matrix), feature_names=FEATURES)
    extra = xgb.train({"objective": "binary:logistic", "max_depth": 3}, dtrain, num_boost_round=2)
    merged = append_trees(champion, extra)
    first = merged.inplace_predict(matrix, iteration_range=(0, champion.num_boosted_rounds()))
    np.testing.assert_array_equal(first, champion.inplace_predict(matrix))
    assert merged.feature_names == FEATURES


def test_stored_margins_extended_by_appended_trees(champion, tmp_path):
    store = MarginStore(tmp_path)
    rows = _rows(["2024-01-02", "2024-01-03"])
    _margins(store, _parent(champion, "v1"), rows)
    child = continue_training(champion, rows, FEATURES, CONFIG)
    margins, stats, matrix = _margins(store, _parent(child, "v2", {"v1": champion}), rows)
    assert (stats.stored_rows, stats.predicted_rows, stats.appended_trees) == (len(rows), 0, CONFIG.trees_per_day)
    np.testing.assert_allclose(margins, full_margins(child, matrix), rtol=0, atol=1e-5)


def test_new_rows_of_a_day_are_predicted(champion, tmp_path):
    store = MarginStore(tmp_path)
    rows = _rows(["2024-01-02"])
    known = rows.iloc[: len(rows) // 2]
    _margins(store, _parent(champion, "v1"), known)
    margins, stats, matrix = _margins(store, _parent(champion, "v1"), rows)
    assert (stats.stored_rows, stats.predicted_rows) == (len(known), len(rows) - len(known))
    np.testing.assert_array_equal(margins, full_margins(champion, matrix))


@pytest.mark.parametrize("change", ["rows", "unrelated model", "model bytes"])
def test_entry_not_used_when_it_does_not_apply(champion, tmp_path, change):
    store = MarginStore(tmp_path)
    rows = _rows(["2024-01-02"])
    _margins(store, _parent(champion, "v1"), rows)
    other = train_full(_rows(["2024-01-05"], seed=9), FEATURES, CONFIG)
    if change == "rows":
        parent, fingerprint = _parent(champion, "v1"), "b"
    elif change == "unrelated model":
        parent, fingerprint = _parent(other, "v7"), "a"
    else:
        parent, fingerprint = _parent(other, "v1"), "a"
    margins, stats, matrix = _margins(store, parent, rows, fingerprint)
    assert (stats.stored_rows, stats.predicted_rows) == (0, len(rows))
    np.testing.assert_array_equal(margins, full_margins(parent.booster, matrix))


def test_unreadable_entry_is_predicted_again(champion, tmp_path):
    store = MarginStore(tmp_path)
    rows = _rows(["2024-01-02"])
    _margins(store, _parent(champion, "v1"), rows)
    store.path(pd.Timestamp("2024-01-02").date()).write_bytes(b"not an npz file")
    _, stats, _ = _margins(store, _parent(champion, "v1"), rows)
    assert stats.predicted_rows == len(rows)


def test_prune_keeps_the_window(champion, tmp_path):
    store = MarginStore(tmp_path)
    _margins(store, _parent(champion, "v1"), _rows(["2024-01-01", "2024-01-02", "2024-01-03"]))
    store.prune({pd.Timestamp("2024-01-03").date()})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["2024-01-03.npz"]


def test_continue_from_margins_needs_base_margin(champion):
    with pytest.raises(TrainingDataError, match="base margin"):
        continue_from_margins(champion, training_matrix(_rows(["2024-01-02"]), FEATURES), FEATURES, CONFIG)
