"""The deployment gate and the full-train policy of models/lifecycle.py."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from freshrank.config import GateConfig, Settings, TrainingConfig, load_settings
from freshrank.feature_store import model_feature_names
from models import lifecycle
from models.lifecycle import ChallengerResult, gate


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return load_settings(tmp_path / "home")


def challenger(new: float | None, old: float | None, version: str | None = "v0002-2024-01-02") -> ChallengerResult:
    result = ChallengerResult(day="2024-01-02", version=version, kind="continued", parent="v0001-2024-01-01")
    result.challenger_holdout = {"ndcg_at_10": new}
    result.champion_holdout = {"ndcg_at_10": old} if old is not None else {}
    return result


SCORES = np.array([0.1, 0.4, 0.8])


def test_gate_first_model_deploys(settings):
    decision = gate(settings, challenger(0.3, None), None, SCORES)
    assert decision.deploy
    assert decision.reasons == []


def test_gate_within_tolerance_deploys(settings):
    decision = gate(settings, challenger(0.495, 0.5), None, SCORES)
    assert decision.deploy


def test_gate_worse_than_tolerance_refuses(settings):
    decision = gate(settings, challenger(0.45, 0.5), None, SCORES)
    assert not decision.deploy
    assert "below the champion's 0.5000" in decision.reasons[0]


def test_gate_drift_blocks_when_configured(settings):
    strict = settings.model_copy(update={"gate": GateConfig(block_on_drift=True)})
    drift = {"alert": True, "drift_share": 0.8}
    assert gate(settings, challenger(0.5, 0.5), drift, SCORES).deploy
    refused = gate(strict, challenger(0.5, 0.5), drift, SCORES)
    assert not refused.deploy
    assert "drift share 0.80" in refused.reasons[0]


def test_gate_rejects_nan_predictions(settings):
    decision = gate(settings, challenger(0.5, 0.4), None, np.array([0.2, np.nan]))
    assert not decision.deploy
    assert "NaN" in decision.reasons[0]


def test_gate_rejects_constant_predictions(settings):
    decision = gate(settings, challenger(0.5, 0.4), None, np.array([0.3, 0.3, 0.3]))
    assert decision.reasons == ["predictions are constant"]


def test_gate_without_challenger_refuses(settings):
    skipped = challenger(None, 0.4, version=None)
    skipped.skipped_reason = "training rows hold labels [0]"
    decision = gate(settings, skipped, None, None)
    assert not decision.deploy
    assert "labels [0]" in decision.reasons[0]


def test_gate_collects_every_reason(settings):
    strict = settings.model_copy(update={"gate": GateConfig(block_on_drift=True)})
    decision = gate(strict, challenger(0.1, 0.5), {"alert": True, "drift_share": 0.9}, np.array([0.5, 0.5]))
    assert len(decision.reasons) == 3


def _register(settings: Settings, trees: int) -> str:
    columns = model_feature_names(settings)
    rng = np.random.default_rng(0)
    matrix = xgb.DMatrix(rng.random((40, len(columns))), label=rng.integers(0, 2, 40), feature_names=columns)
    booster = xgb.train({"objective": "binary:logistic"}, matrix, num_boost_round=trees)
    registry = lifecycle.registry_for(settings)
    version = registry.register(
        booster, day="2024-01-01", kind="full", parent=None, feature_columns=columns,
        training_partitions=[{"day": "2024-01-01", "data_version": "abc"}], params={},
    )
    registry.deploy(version, reason="test")
    return version


def test_policy_full_without_champion(settings):
    assert lifecycle._needs_full_train(settings, lifecycle.registry_for(settings), None) == "no champion yet"


def test_policy_continues_under_budget(settings):
    version = _register(settings, trees=20)
    assert lifecycle._needs_full_train(settings, lifecycle.registry_for(settings), version) is None


def test_policy_rebases_at_tree_budget(settings):
    small_budget = settings.model_copy(update={"training": TrainingConfig(max_trees=25, trees_per_day=10)})
    version = _register(settings, trees=20)
    reason = lifecycle._needs_full_train(small_budget, lifecycle.registry_for(settings), version)
    assert reason.startswith("tree budget")
