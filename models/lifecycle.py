"""The daily model stages: prequential evaluation, challenger training, and the deployment gate.

Each function reads the day's stored training rows and the model registry, and returns a
JSON-able record that the Dagster assets attach as metadata.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from freshrank.config import Settings
from freshrank.faults import crash_point
from freshrank.feature_store import model_feature_names
from freshrank.training_rows import read_training_rows, stored_training_days
from freshrank.warehouse import connect
from models.evaluation import evaluate
from models.registry import ModelRegistry
from models.training import continue_training, predict, split_holdout, train_full, tree_count

logger = logging.getLogger(__name__)


def registry_for(settings: Settings) -> ModelRegistry:
    """Open the model registry of a home."""
    return ModelRegistry(settings.registry_dir)


def score(booster, rows: pd.DataFrame, settings: Settings) -> dict:
    """Score rows with a model and return the ranking and threshold metrics."""
    if rows.empty:
        return {"rows": 0}
    scores = predict(booster, rows, model_feature_names(settings))
    groups = (rows["event_day"] + "|" + rows["user_id"]).to_numpy()
    return evaluate(rows["label"].to_numpy(), scores, groups, settings.gate.operating_threshold)


def previous_challenger(registry: ModelRegistry, day: date) -> str | None:
    """Return the newest model version trained on a day before ``day``."""
    earlier = [version for version in registry.versions() if registry.metadata(version)["day"] < day.isoformat()]
    return earlier[-1] if earlier else None


def prequential_evaluation(settings: Settings, day: date) -> dict:
    """Score the day's rows, before any training on them, with the champion and the last challenger."""
    registry = registry_for(settings)
    rows = read_training_rows(settings, [day])
    record: dict = {"day": day.isoformat(), "rows": len(rows), "champion": registry.champion()}
    if record["champion"] is not None:
        record["champion_metrics"] = score(registry.load(record["champion"]), rows, settings)
    challenger = previous_challenger(registry, day)
    record["previous_challenger"] = challenger
    if challenger is not None and challenger != record["champion"]:
        record["previous_challenger_metrics"] = score(registry.load(challenger), rows, settings)
    return record


def partition_versions(settings: Settings, days: list[str]) -> list[dict]:
    """Return the warehouse data version of each day, for lineage."""
    with connect(settings.warehouse_path, read_only=True) as con:
        found = dict(
            con.execute(
                "SELECT strftime(event_day, '%Y-%m-%d'), data_version FROM partitions WHERE event_day IN "
                f"(SELECT unnest(?::DATE[]))",
                [days],
            ).fetchall()
        )
    return [{"day": day, "data_version": found.get(day)} for day in days]


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

    def to_dict(self) -> dict:
        return asdict(self)


def _needs_full_train(settings: Settings, registry: ModelRegistry, champion: str | None) -> str | None:
    """Return why the challenger must be a full train, or None for a continued round."""
    if champion is None:
        return "no champion yet"
    trees = registry.metadata(champion).get("tree_count", 0)
    if trees + settings.training.trees_per_day > settings.training.max_trees:
        return f"tree budget: champion has {trees} trees, budget {settings.training.max_trees}"
    if registry.metadata(champion).get("feature_columns") != model_feature_names(settings):
        return "the feature set changed since the champion was trained"
    return None


def train_challenger(settings: Settings, day: date) -> ChallengerResult:
    """Train day ``day``'s challenger: continued boosting from the champion, or a full train.

    Whole users of the day are held out (``holdout_share``) so that challenger and champion
    are compared on rows neither has seen.
    """
    registry = registry_for(settings)
    columns = model_feature_names(settings)
    champion = registry.champion()
    rows = read_training_rows(settings, [day])
    train, holdout = split_holdout(rows, settings.training.holdout_share, settings.training.seed)
    full_reason = _needs_full_train(settings, registry, champion)
    if full_reason:
        earlier = stored_training_days(settings, day, settings.training.full_train_window_days - 1)
        train = pd.concat([read_training_rows(settings, earlier), train], ignore_index=True)
        training_days = [d.isoformat() for d in earlier] + [day.isoformat()]
        kind, parent = "full", None
    else:
        training_days = [day.isoformat()]
        kind, parent = "continued", champion
    result = ChallengerResult(day.isoformat(), None, kind, parent, training_rows=len(train), holdout_rows=len(holdout))
    result.training_days = training_days
    labels = set(train["label"].unique()) if not train.empty else set()
    if labels != {0, 1}:
        result.skipped_reason = f"training rows hold labels {sorted(labels)}; both 0 and 1 are needed"
        logger.warning("no challenger for %s: %s", day, result.skipped_reason)
        return result
    if kind == "full":
        booster = train_full(train, columns, settings.training)
    else:
        booster = continue_training(registry.load(champion), train, columns, settings.training)
    result.trees = tree_count(booster)
    result.challenger_holdout = score(booster, holdout, settings)
    if champion is not None:
        result.champion_holdout = score(registry.load(champion), holdout, settings)
    crash_point("lifecycle.before_register")
    result.version = registry.register(
        booster,
        day=day.isoformat(),
        kind=kind,
        parent=parent,
        feature_columns=columns,
        training_partitions=partition_versions(settings, training_days),
        params={"full_reason": full_reason, **settings.training.model_dump()},
        metrics={"holdout": result.challenger_holdout, "champion_holdout": result.champion_holdout},
    )
    return result


@dataclass
class GateDecision:
    """Whether the challenger replaces the champion, and every reason against it."""

    deploy: bool
    reasons: list[str]
    metric: str
    challenger_value: float | None
    champion_value: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def gate(settings: Settings, challenger: ChallengerResult, drift: dict | None, predictions: np.ndarray | None) -> GateDecision:
    """Decide deployment: checks passed (implied by running), metric within tolerance, drift, sanity."""
    metric = settings.gate.metric
    reasons: list[str] = []
    new_value = challenger.challenger_holdout.get(metric)
    old_value = challenger.champion_holdout.get(metric) if challenger.champion_holdout else None
    if challenger.version is None:
        reasons.append(f"no challenger: {challenger.skipped_reason}")
    elif old_value is not None:
        if new_value is None:
            reasons.append(f"holdout {metric} of the challenger is undefined (no positive in the holdout)")
        elif new_value < old_value - settings.gate.tolerance:
            reasons.append(
                f"holdout {metric} {new_value:.4f} is below the champion's {old_value:.4f} "
                f"by more than the tolerance {settings.gate.tolerance}"
            )
    if drift and drift.get("alert") and settings.gate.block_on_drift:
        reasons.append(f"drift share {drift['drift_share']:.2f} is over {settings.drift.drift_share_threshold}")
    if predictions is not None and len(predictions):
        if not np.isfinite(predictions).all():
            reasons.append("predictions contain NaN or infinite values")
        elif len(predictions) > 1 and float(np.std(predictions)) == 0.0:
            reasons.append("predictions are constant")
    return GateDecision(not reasons, reasons, metric, new_value, old_value)
