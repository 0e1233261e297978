"""The daily model stages: prequential evaluation, challenger training, and the deployment gate.

Each function reads the day's stored training rows and the model registry, and returns a
JSON-able record that the Dagster assets attach as metadata. Which kind of challenger a
day gets is decided in ``models.policy``, and the shadow full retrain lives in
``models.shadow``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from statistics import NormalDist

import numpy as np
import pandas as pd
import xgboost as xgb

from freshrank.config import Settings
from freshrank.faults import crash_point
from freshrank.feature_store import model_feature_names
from freshrank.training_rows import read_training_rows
from models.policy import (
    FULL,
    TrainingPlan,
    lineage_root,
    partition_versions,
    plan_challenger,
    rebase_due,
    registry_for,
    training_and_holdout_rows,
)
from models.margins import continued_training_matrix
from models.registry import ModelRegistry
from models.shadow import ShadowStore, latest_shadow_for
from models.training import (
    continue_from_margins,
    continue_training,
    model_size_bytes,
    paired_group_difference,
    score_rows,
    train_full,
    training_matrix,
    training_params,
    tree_count,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ChallengerResult",
    "GateCheck",
    "GateDecision",
    "gate",
    "partition_versions",
    "prequential_evaluation",
    "previous_challenger",
    "registry_for",
    "score",
    "train_challenger",
]


def score(booster: xgb.Booster, rows: pd.DataFrame, settings: Settings) -> dict:
    """Score rows with a model and return the ranking and threshold metrics."""
    return score_rows(booster, rows, model_feature_names(settings), settings.gate.operating_threshold)


def previous_challenger(registry: ModelRegistry, day: date) -> str | None:
    """Return the newest model version trained on a day before ``day``."""
    earlier = [version for version in registry.versions() if registry.metadata(version)["day"] < day.isoformat()]
    return earlier[-1] if earlier else None


def prequential_evaluation(settings: Settings, day: date) -> dict:
    """Score the day's rows, before any training on them, with the champion, the last challenger and the shadow.

    The shadow is the newest shadow full retrain of an earlier day that is newer than the
    champion's last full train. Its ``lead`` (shadow minus champion on ``gate.metric``) is
    what the policy's degradation trigger reads.
    """
    registry = registry_for(settings)
    rows = read_training_rows(settings, [day])
    record: dict = {"day": day.isoformat(), "rows": len(rows), "champion": registry.champion_for(day.isoformat())}
    if record["champion"] is not None:
        record["champion_metrics"] = score(registry.load(record["champion"]), rows, settings)
        shadow = _score_shadow(settings, registry, record["champion"], rows, day, record["champion_metrics"])
        if shadow is not None:
            record["shadow"] = shadow
    challenger = previous_challenger(registry, day)
    record["previous_challenger"] = challenger
    if challenger is not None and challenger != record["champion"]:
        record["previous_challenger_metrics"] = score(registry.load(challenger), rows, settings)
    return record


def _score_shadow(
    settings: Settings, registry: ModelRegistry, champion: str, rows: pd.DataFrame, day: date, champion_metrics: dict
) -> dict | None:
    root = lineage_root(registry, champion)
    shadow_day = latest_shadow_for(settings, day, root["day"])
    if shadow_day is None or rows.empty:
        return None
    metrics = score(ShadowStore.of(settings).load(shadow_day), rows, settings)
    metric = settings.gate.metric
    lead = None
    if metrics.get(metric) is not None and champion_metrics.get(metric) is not None:
        lead = float(metrics[metric]) - float(champion_metrics[metric])
    return {"day": shadow_day, "metric": metric, "metrics": metrics, "lead": lead, "champion_full_train": root["version"]}


@dataclass
class ChallengerResult:
    """Outcome of training the day's challenger."""

    day: str
    version: str | None
    kind: str | None
    parent: str | None
    trees: int = 0
    training_rows: int = 0
    holdout_rows: int = 0
    training_days: list[str] = field(default_factory=list)
    challenger_holdout: dict = field(default_factory=dict)
    champion_holdout: dict = field(default_factory=dict)
    skipped_reason: str | None = None
    champion: str | None = None
    """Champion when the challenger was trained (the parent of a continued round)."""
    rebase: dict | None = None
    """Trigger, reason, replaced champion and evidence of the day's rebase (see ``models.policy.Rebase``);
    for a promoted shadow also ``promoted_version``. None for an ordinary continued round."""
    model_bytes: int = 0
    """Size of the model as XGBoost UBJSON, in bytes."""
    trees_added: int = 0
    """Trees this training run grew: all of them for a full train, ``trees_per_day`` for a continued round."""
    train_seconds: float = 0.0
    """Wall time of the XGBoost training, in seconds."""
    train_cpu_seconds: float = 0.0
    """CPU time of this process (all threads) during the XGBoost training, in seconds."""
    base_margins: dict | None = None
    """Source counts of the parent's margins in a continued round (``models.margins.MarginStats``).
    None for a full train or with ``training.store_margins`` off."""
    metric_comparison: dict | None = None
    """Paired per-group difference of ``gate.metric``, challenger minus champion, on the holdout
    (see ``models.training.paired_group_difference``); None without a champion."""

    def to_dict(self) -> dict:
        return asdict(self)


def _needs_full_train(settings: Settings, registry: ModelRegistry, champion: str | None) -> str | None:
    """Return why the challenger must be a full train by champion alone (no day-based triggers), or None."""
    rebase = rebase_due(settings, registry, champion, None)
    return rebase.reason if rebase is not None else None


def train_challenger(settings: Settings, day: date) -> ChallengerResult:
    """Train day ``day``'s challenger: a continued round from the champion, or a full train (rebase).

    Whole users of the day are held out (``holdout_share``) so that challenger and champion
    are compared on rows neither has seen.
    """
    registry = registry_for(settings)
    columns = model_feature_names(settings)
    plan = plan_challenger(settings, registry, day)
    champion = registry.champion_for(day.isoformat())
    train, holdout = training_and_holdout_rows(settings, plan.training_days, day)
    result = ChallengerResult(
        day.isoformat(),
        None,
        plan.kind,
        plan.parent,
        training_rows=len(train),
        holdout_rows=len(holdout),
        training_days=[d.isoformat() for d in plan.training_days],
        champion=champion,
        rebase=plan.rebase.to_dict() if plan.rebase else None,
    )
    labels = set(train["label"].unique()) if not train.empty else set()
    if labels != {0, 1}:
        result.skipped_reason = f"training rows hold labels {sorted(labels)}; both 0 and 1 are needed"
        logger.warning("no challenger for %s: %s", day, result.skipped_reason)
        return result

    champion_model = registry.load(champion) if champion is not None else None
    parent_model = champion_model
    if plan.promote_shadow is not None:
        result.parent, parent_model = _promote_shadow(settings, registry, plan, columns)
        result.rebase = {**result.rebase, "promoted_version": result.parent}
    wall, cpu = time.perf_counter(), time.process_time()
    # The matrix is built first, so the frame is freed while XGBoost trains.
    if plan.kind != FULL and settings.training.store_margins:
        dtrain, margin_stats = continued_training_matrix(settings, registry, result.parent, parent_model, train, columns)
        result.base_margins = margin_stats.to_dict()
    else:
        dtrain = training_matrix(train, columns, quantized=plan.kind == FULL)
    del train
    booster = _train(settings, plan.kind, parent_model, dtrain, columns, result)
    del dtrain
    result.train_seconds = time.perf_counter() - wall
    result.train_cpu_seconds = time.process_time() - cpu
    result.trees = tree_count(booster)
    result.model_bytes = model_size_bytes(booster)
    result.challenger_holdout = score(booster, holdout, settings)
    if champion_model is not None:
        result.champion_holdout = score(champion_model, holdout, settings)
        result.metric_comparison = paired_group_difference(
            booster, champion_model, holdout, columns, settings.gate.metric, settings.gate.operating_threshold
        )
    crash_point("lifecycle.before_register")
    result.version = _register(settings, registry, booster, result, columns)
    return result


def _promote_shadow(
    settings: Settings, registry: ModelRegistry, plan: TrainingPlan, columns: list[str]
) -> tuple[str, xgb.Booster]:
    """Register the plan's shadow as a full version (once) and return it with its model.

    The version carries the rebase record, so lineage shows the degradation rebase at the
    full train where the chain restarts. A shadow promoted before (for a challenger the
    gate rejected) is reused, not registered twice.
    """
    store = ShadowStore.of(settings)
    shadow_day = plan.promote_shadow
    booster = store.load(shadow_day)
    for version in reversed(registry.versions()):
        if (registry.metadata(version).get("extra") or {}).get("promoted_shadow") == shadow_day:
            return version, booster
    record = store.record(shadow_day)
    version = registry.register(
        booster,
        day=shadow_day,
        kind=FULL,
        parent=None,
        feature_columns=columns,
        training_partitions=partition_versions(settings, record["training_days"]),
        params=record["params"],
        metrics={"holdout": record["shadow_holdout"], "champion_holdout": record["champion_holdout"]},
        extra={
            "rebase": plan.rebase.to_dict(),
            "promoted_shadow": shadow_day,
            "promoted_on": plan.day.isoformat(),
            "training_rows": record["training_rows"],
            "holdout_rows": record["holdout_rows"],
            "trees_added": record["trees"],
            "model_bytes": record["model_bytes"],
            "train_seconds": record["train_seconds"],
            "policy": settings.training.model_dump(),
        },
    )
    logger.info("promoted the shadow of %s to %s: %s", shadow_day, version, plan.rebase.reason)
    return version, booster


def _train(
    settings: Settings,
    kind: str,
    champion: xgb.Booster | None,
    train: xgb.DMatrix,
    columns: list[str],
    result: ChallengerResult,
) -> xgb.Booster:
    """Run the XGBoost training of the plan on its matrix and record the trees it added."""
    if kind == FULL:
        booster = train_full(train, columns, settings.training)
        result.trees_added = tree_count(booster)
        return booster
    parent_trees = tree_count(champion)
    if train.get_base_margin().size:
        booster = continue_from_margins(champion, train, columns, settings.training)
    else:
        booster = continue_training(champion, train, columns, settings.training)
    result.trees_added = tree_count(booster) - parent_trees
    return booster


def _register(
    settings: Settings, registry: ModelRegistry, booster: xgb.Booster, result: ChallengerResult, columns: list[str]
) -> str:
    training = settings.training
    learning_rate = training.learning_rate if result.kind == FULL else training.continued_learning_rate
    trees = training.full_train_trees if result.kind == FULL else training.trees_per_day
    return registry.register(
        booster,
        day=result.day,
        kind=result.kind,
        parent=result.parent,
        feature_columns=columns,
        training_partitions=partition_versions(settings, result.training_days),
        params={**training_params(training, learning_rate=learning_rate), "num_boost_round": trees},
        metrics={"holdout": result.challenger_holdout, "champion_holdout": result.champion_holdout},
        extra={
            "rebase": result.rebase if result.kind == FULL else None,
            "continues_promoted_shadow": result.rebase if result.kind != FULL else None,
            "champion": result.champion,
            "training_rows": result.training_rows,
            "holdout_rows": result.holdout_rows,
            "trees_added": result.trees_added,
            "model_bytes": result.model_bytes,
            "train_seconds": result.train_seconds,
            "policy": training.model_dump(),
        },
    )


@dataclass
class GateCheck:
    """One condition of the gate, with the observed value beside its threshold."""

    name: str
    passed: bool | None
    """None when the condition could not be checked (``reason`` gives the cause); it does not block."""
    observed: object = None
    threshold: object = None
    reason: str | None = None
    """Cause of the failure or of the skipped check; None when the check passed."""


@dataclass
class GateDecision:
    """Whether the challenger replaces the champion, and every reason against it."""

    deploy: bool
    reasons: list[str]
    metric: str
    challenger_value: float | None
    champion_value: float | None
    checks: list[dict] = field(default_factory=list)
    """Every ``GateCheck`` as a dict, in the order they ran, passed or not."""

    def to_dict(self) -> dict:
        return asdict(self)


GATE_CHECKS: tuple[str, ...] = ("challenger_trained", "validation", "metric", "drift", "model_size", "predictions")
"""Names of the gate's checks, in the order they run."""


def gate(
    settings: Settings,
    challenger: ChallengerResult,
    drift: dict | None,
    predictions: np.ndarray | None,
    validation_passed: bool | None = None,
) -> GateDecision:
    """Decide deployment: every check must pass, and each failure is one reason.

    Args:
        settings: Settings of the home (``gate`` and ``training.max_trees``).
        challenger: The day's challenger with its holdout metrics and the champion's.
        drift: The day's drift record (``alert``, ``drift_share``), or None when none ran.
        predictions: The challenger's scores of the day's rows, for the sanity check.
        validation_passed: Outcome of the day's increment validation. None means the caller
            has no result to pass, which is recorded and does not block. The Dagster check
            stops a failed day before the gate runs, and homes built without it have no result.

    Returns:
        The decision, with one entry in ``checks`` per condition.
    """
    metric = settings.gate.metric
    new_value = challenger.challenger_holdout.get(metric)
    old_value = challenger.champion_holdout.get(metric) if challenger.champion_holdout else None
    if challenger.version is None:
        checks = [GateCheck("challenger_trained", False, reason=f"no challenger: {challenger.skipped_reason}")]
    else:
        checks = [
            GateCheck("challenger_trained", True, observed=challenger.version),
            _validation_check(challenger.day, validation_passed),
            _metric_check(settings, metric, new_value, old_value, challenger.metric_comparison),
            _drift_check(settings, drift),
            _size_check(settings, challenger),
            _prediction_check(predictions),
        ]
    reasons = [check.reason for check in checks if check.passed is False and check.reason]
    return GateDecision(not reasons, reasons, metric, new_value, old_value, [asdict(check) for check in checks])


def _validation_check(day: str, passed: bool | None) -> GateCheck:
    if passed is None:
        return GateCheck("validation", None, reason=f"no validation result recorded for {day}")
    if not passed:
        return GateCheck("validation", False, observed=False, threshold=True, reason=f"the validation of {day} failed")
    return GateCheck("validation", True, observed=True, threshold=True)


def _metric_check(
    settings: Settings, metric: str, new_value: float | None, old_value: float | None, comparison: dict | None
) -> GateCheck:
    tolerance = settings.gate.tolerance
    if old_value is None:
        return GateCheck("metric", True, observed=new_value, reason=None)
    if new_value is None:
        return GateCheck(
            "metric", False, threshold=old_value - tolerance,
            reason=f"holdout {metric} of the challenger is undefined (no positive in the holdout)",
        )
    if comparison and comparison.get("standard_error") is not None:
        return _paired_metric_check(settings, metric, new_value, old_value, comparison)
    if comparison:
        # One query group is one user's ranking, so its difference cannot separate the models from noise.
        return GateCheck(
            "metric", None, observed=new_value, threshold=old_value - tolerance,
            reason=f"not checked: the holdout has {comparison['groups']} query group with a positive, too few to compare {metric}",
        )
    if new_value < old_value - tolerance:
        return GateCheck(
            "metric", False, observed=new_value, threshold=old_value - tolerance,
            reason=(
                f"holdout {metric} {new_value:.4f} is below the champion's {old_value:.4f} "
                f"by more than the tolerance {tolerance}"
            ),
        )
    return GateCheck("metric", True, observed=new_value, threshold=old_value - tolerance)


def _paired_metric_check(
    settings: Settings, metric: str, new_value: float, old_value: float, comparison: dict
) -> GateCheck:
    """Reject only when even the upper confidence bound of the paired difference is below ``-tolerance``.

    One day's holdout contains a few dozen to a few hundred query groups, so the difference of
    two models' means moves by a few hundredths from noise alone. Comparing plain means with a
    tolerance of 0.01 would reject about every other challenger that ranks differently.
    """
    tolerance, confidence = settings.gate.tolerance, settings.gate.metric_confidence
    mean, error = comparison["mean_difference"], comparison["standard_error"]
    upper = mean + NormalDist().inv_cdf(confidence) * error
    observed = {"difference": mean, "standard_error": error, "upper_bound": upper, "groups": comparison["groups"]}
    if upper < -tolerance:
        reason = (
            f"holdout {metric} {new_value:.4f} is below the champion's {old_value:.4f} by {-mean:.4f} "
            f"(standard error {error:.4f} over {comparison['groups']} query groups); the upper {confidence:.0%} "
            f"bound of the difference, {upper:+.4f}, is below the tolerance -{tolerance}"
        )
        return GateCheck("metric", False, observed, -tolerance, reason)
    return GateCheck("metric", True, observed, -tolerance)


def _drift_check(settings: Settings, drift: dict | None) -> GateCheck:
    threshold = settings.drift.drift_share_threshold
    share = (drift or {}).get("drift_share")
    if drift and drift.get("alert") and settings.gate.block_on_drift:
        return GateCheck("drift", False, observed=share, threshold=threshold, reason=f"drift share {share:.2f} is over {threshold}")
    return GateCheck("drift", True, observed=share, threshold=threshold if settings.gate.block_on_drift else None)


def _size_check(settings: Settings, challenger: ChallengerResult) -> GateCheck:
    max_trees, max_bytes = settings.training.max_trees, settings.gate.max_model_bytes
    observed = {"trees": challenger.trees, "bytes": challenger.model_bytes}
    threshold = {"trees": max_trees, "bytes": max_bytes}
    problems = []
    if challenger.trees > max_trees:
        problems.append(f"{challenger.trees} trees is over the tree budget {max_trees}")
    if challenger.model_bytes > max_bytes:
        problems.append(f"{challenger.model_bytes} bytes is over the size budget {max_bytes} (gate.max_model_bytes)")
    if problems:
        return GateCheck("model_size", False, observed, threshold, reason="model size: " + "; ".join(problems))
    return GateCheck("model_size", True, observed, threshold)


def _prediction_check(predictions: np.ndarray | None) -> GateCheck:
    if predictions is None or len(predictions) == 0:
        return GateCheck("predictions", None, reason="no predictions to check")
    observed = {"rows": int(len(predictions))}
    if not np.isfinite(predictions).all():
        observed["non_finite"] = int((~np.isfinite(predictions)).sum())
        return GateCheck("predictions", False, observed, reason="predictions contain NaN or infinite values")
    observed.update(min=float(np.min(predictions)), max=float(np.max(predictions)), std=float(np.std(predictions)))
    if np.min(predictions) < 0.0 or np.max(predictions) > 1.0:
        return GateCheck("predictions", False, observed, reason="predictions are outside [0, 1]")
    if len(predictions) > 1 and observed["std"] == 0.0:
        return GateCheck("predictions", False, observed, reason="predictions are constant")
    return GateCheck("predictions", True, observed)
