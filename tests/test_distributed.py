"""xgboost.dask on a Dask LocalCluster trains a model as good as single-process training on the same day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freshrank.config import TrainingConfig
from models.evaluation import evaluate
from models.training import predict, split_holdout, train_full

pytest.importorskip("dask.distributed")

FEATURES = [f"f{i}" for i in range(8)]


@pytest.fixture(scope="module")
def day_rows() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    users, items = 400, 30
    frame = pd.DataFrame(
        {
            "event_day": "2024-01-05",
            "user_id": np.repeat([f"u{i}" for i in range(users)], items),
            "item_id": np.tile([f"i{j}" for j in range(items)], users),
        }
    )
    values = rng.normal(size=(len(frame), len(FEATURES)))
    for index, name in enumerate(FEATURES):
        frame[name] = values[:, index]
    logit = 1.5 * values[:, 0] - 1.0 * values[:, 1] + 0.5 * values[:, 2] * values[:, 3] - 2.5
    frame["label"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def _quality(booster, rows) -> dict:
    scores = predict(booster, rows, FEATURES)
    return evaluate(rows["label"].to_numpy(), scores, rows["user_id"].to_numpy(), 0.5)


def test_dask_matches_single_process(day_rows):
    from models.distributed import train_full_dask

    config = TrainingConfig(full_train_trees=60, nthread=1)
    train, holdout = split_holdout(day_rows, 0.25, seed=1)
    local = _quality(train_full(train, FEATURES, config), holdout)
    distributed_booster = train_full_dask(train, FEATURES, config, workers=2)
    distributed = _quality(distributed_booster, holdout)
    assert distributed_booster.num_boosted_rounds() == 60
    assert distributed["auc"] == pytest.approx(local["auc"], abs=0.02)
    assert distributed["ndcg_at_10"] == pytest.approx(local["ndcg_at_10"], abs=0.03)
    assert distributed["auc"] > 0.7
