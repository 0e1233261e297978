"""The model policy: whether a day's challenger continues the champion or rebases, and why.

A challenger is a **continued round** unless a rebase is due: the champion plus
``training.trees_per_day`` trees, trained at ``training.continued_learning_rate`` on the
trailing ``training.continued_window_days`` stored days (the new day included). A
**rebase** is a full train of ``training.full_train_trees`` trees at
``training.learning_rate`` on the trailing ``training.full_train_window_days`` stored days.
The first trigger that applies names the rebase, in this order:

``initial``
    There is no champion yet.
``feature_set``
    The champion's feature columns differ from the current feature set.
``tree_budget``
    The champion's trees plus ``trees_per_day`` would pass ``training.max_trees``.
``degradation``
    The latest shadow full retrain (see ``models.shadow``), trained after the champion's
    last full train, scored above the champion in the prequential evaluation by more than
    ``training.rebase_margin`` on ``gate.metric``, averaged over the newest
    ``training.shadow_comparison_days`` days that compared them. With
    ``training.rebase_from_shadow`` that shadow is registered as the new full train and
    the day's challenger is a continued round from it, so no second full model is trained.
``schedule``
    ``training.rebase_every_days`` days or more have passed since the champion's last full
    train (off when 0).

In every case the day's users in the holdout (``training.holdout_share``) are left out of
the day's training rows, so that challenger and champion are compared on rows neither saw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date

import pandas as pd

from freshrank.config import Settings
from freshrank.feature_store import model_feature_names
from freshrank.records import record_path
from freshrank.training_rows import (
    read_compact_training_rows,
    read_training_rows,
    stored_row_count,
    stored_training_days,
)
from freshrank.warehouse import connect
from models.registry import ModelRegistry
from models.training import split_holdout

logger = logging.getLogger(__name__)

FULL = "full"
CONTINUED = "continued"
REBASE_TRIGGERS: dict[str, str] = {
    "initial": "no champion yet",
    "feature_set": "the feature set changed since the champion was trained",
    "tree_budget": "the champion would pass the tree budget",
    "degradation": "the champion fell behind a shadow full retrain",
    "schedule": "the scheduled rebase period since the last full train has passed",
}
"""Rebase triggers in the order they are checked, with what each means."""
PREQUENTIAL_STAGE = "prequential_evaluation"
"""Stage name of the prequential records, whose ``shadow`` entries feed the degradation trigger."""


def registry_for(settings: Settings) -> ModelRegistry:
    """Open the model registry of a home."""
    return ModelRegistry(settings.registry_dir)


@dataclass(frozen=True)
class Rebase:
    """Trigger of a rebase, with the figures that decided it."""

    trigger: str
    """One of ``REBASE_TRIGGERS``."""
    reason: str
    """One readable sentence naming the trigger and its figures."""
    replaces: str | None
    """Champion version at the time of the rebase; None for the first model."""
    evidence: dict = field(default_factory=dict)
    """Figures behind the decision (tree counts, shadow leads, days since the full train)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainingPlan:
    """The kind of a day's challenger, its parent and the stored days it trains on."""

    day: date
    kind: str
    """``full`` or ``continued``."""
    parent: str | None
    """Champion that a continued round boosts from; None for a full train."""
    training_days: list[date]
    """Days whose training rows the challenger trains on, oldest first, ``day`` last."""
    rebase: Rebase | None = None
    """The day's rebase; None for an ordinary continued round."""
    promote_shadow: str | None = None
    """Day of the shadow that becomes the new full train, for a ``degradation`` rebase with
    ``training.rebase_from_shadow``; the challenger then continues from it."""


def plan_challenger(settings: Settings, registry: ModelRegistry, day: date) -> TrainingPlan:
    """Decide whether ``day``'s challenger continues the champion or rebases.

    Args:
        settings: Settings of the home (``training`` and ``gate.metric``).
        registry: The home's model registry; its champion is the parent of a continued round.
        day: The partition the challenger is trained for.

    Returns:
        The plan: kind, parent, training days and, for a full train, the rebase trigger.
    """
    champion = registry.champion_for(day.isoformat())
    rebase = rebase_due(settings, registry, champion, day)
    continued_days = trailing_days(settings, day, settings.training.continued_window_days)
    if rebase is None:
        return TrainingPlan(day, CONTINUED, champion, continued_days)
    if rebase.trigger == "degradation" and settings.training.rebase_from_shadow:
        logger.info("challenger of %s continues the promoted shadow of %s: %s", day, rebase.evidence["shadow_day"], rebase.reason)
        return TrainingPlan(day, CONTINUED, None, continued_days, rebase, promote_shadow=rebase.evidence["shadow_day"])
    logger.info("challenger of %s is a full train: %s", day, rebase.reason)
    return TrainingPlan(day, FULL, None, trailing_days(settings, day, settings.training.full_train_window_days), rebase)


def rebase_due(settings: Settings, registry: ModelRegistry, champion: str | None, day: date | None) -> Rebase | None:
    """Return the first rebase trigger that applies to ``champion`` on ``day``, or None.

    Args:
        settings: Settings of the home.
        registry: The home's model registry.
        champion: The deployed version, or None before the first deployment.
        day: The day being trained; None skips the triggers that need it
            (``degradation`` and ``schedule``).
    """
    if champion is None:
        return Rebase("initial", REBASE_TRIGGERS["initial"], None)
    record = registry.metadata(champion)
    if record.get("feature_columns") != model_feature_names(settings):
        return Rebase("feature_set", REBASE_TRIGGERS["feature_set"], champion)
    budget = _tree_budget(settings, champion, record)
    if budget is not None or day is None:
        return budget
    root = lineage_root(registry, champion)
    return _degradation(settings, champion, root, day) or _schedule(settings, champion, root, day)


def _tree_budget(settings: Settings, champion: str, record: dict) -> Rebase | None:
    trees = int(record.get("tree_count", 0))
    training = settings.training
    if trees + training.trees_per_day <= training.max_trees:
        return None
    reason = (
        f"tree budget: champion {champion} has {trees} trees, and {training.trees_per_day} more "
        f"would pass the budget of {training.max_trees}"
    )
    return Rebase("tree_budget", reason, champion, {"champion_trees": trees, "max_trees": training.max_trees})


def _degradation(settings: Settings, champion: str, root: dict, day: date) -> Rebase | None:
    lead = shadow_lead(settings, date.fromisoformat(root["day"]), day)
    if lead is None:
        return None
    margin = settings.training.rebase_margin
    if lead["mean_lead"] <= margin:
        return None
    reason = (
        f"degradation: shadow full retrain of {lead['shadow_day']} scored {lead['mean_lead']:+.4f} "
        f"{lead['metric']} over champion {champion} (mean over {len(lead['days'])} prequential days), "
        f"more than the margin {margin}"
    )
    return Rebase("degradation", reason, champion, {**lead, "margin": margin})


def _schedule(settings: Settings, champion: str, root: dict, day: date) -> Rebase | None:
    period = settings.training.rebase_every_days
    age = (day - date.fromisoformat(root["day"])).days
    if period <= 0 or age < period:
        return None
    reason = f"schedule: the last full train {root['version']} is {age} days old, the rebase period is {period} days"
    return Rebase("schedule", reason, champion, {"full_train": root["version"], "age_days": age, "period_days": period})


def lineage_root(registry: ModelRegistry, version: str) -> dict:
    """Return the metadata of the full train that ``version``'s chain of parents ends at."""
    return registry.lineage(version)[-1]


def trailing_days(settings: Settings, day: date, count: int) -> list[date]:
    """Return ``day`` and the ``count - 1`` stored training days before it, oldest first."""
    return stored_training_days(settings, day, count - 1) + [day]


def training_and_holdout_rows(settings: Settings, training_days: list[date], day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the rows of ``training_days`` and hold out ``day``'s holdout users.

    Only ``day`` is split, by ``split_holdout`` with the training seed, so the challenger,
    the champion and the shadow are all compared on the same held-out rows of the new day.
    Earlier days are used whole while all rows fit ``training.max_training_rows``; beyond
    it, a seeded share of their query groups is kept (``read_compact_training_rows``).

    Returns:
        ``(train_rows, holdout_rows)``; both are empty when ``day`` has no stored rows.
    """
    today = read_compact_training_rows(settings, [day])
    if today.empty:
        return today, today
    train, holdout = split_holdout(today, settings.training.holdout_share, settings.training.seed)
    del today
    earlier_days = [d for d in training_days if d != day]
    earlier_rows = stored_row_count(settings, earlier_days)
    room = max(settings.training.max_training_rows - len(train), 0)
    keep_share = 1.0 if earlier_rows <= room else room / earlier_rows
    if keep_share < 1.0:
        logger.info(
            "training rows: keeping %.1f%% of the query groups of %d earlier days (%d rows) to stay within "
            "training.max_training_rows (%d)", 100 * keep_share, len(earlier_days), earlier_rows,
            settings.training.max_training_rows,
        )
    earlier = read_compact_training_rows(settings, earlier_days, keep_share)
    if not earlier.empty:
        train = pd.concat([earlier, train], ignore_index=True)
    return train, holdout


def shadow_lead(settings: Settings, full_train_day: date, day: date) -> dict | None:
    """Average the latest shadow's prequential lead over the champion, from the stored records.

    Only records of days after ``full_train_day`` whose shadow was trained after it count,
    because an older shadow was never compared with the chain that started then.

    Args:
        settings: Settings of the home.
        full_train_day: Day of the champion's last full train.
        day: The newest prequential day to read.

    Returns:
        ``{"metric", "shadow_day", "days", "leads", "mean_lead"}`` over the newest
        ``training.shadow_comparison_days`` records of the latest such shadow, or None while
        fewer records compared them.
    """
    needed = settings.training.shadow_comparison_days
    folder = settings.reports_dir / PREQUENTIAL_STAGE
    if not folder.is_dir():
        return None
    comparisons: list[tuple[str, str, float]] = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        record_day = path.stem
        if record_day > day.isoformat():
            continue
        if record_day <= full_train_day.isoformat():
            break
        shadow = json.loads(path.read_text()).get("shadow") or {}
        lead = shadow.get("lead")
        if lead is None or shadow.get("day", "") <= full_train_day.isoformat():
            continue
        comparisons.append((record_day, shadow["day"], float(lead)))
    if not comparisons:
        return None
    latest_shadow = comparisons[0][1]
    chosen = [entry for entry in comparisons if entry[1] == latest_shadow][:needed]
    if len(chosen) < needed:
        return None
    leads = [entry[2] for entry in chosen]
    return {
        "metric": settings.gate.metric,
        "shadow_day": latest_shadow,
        "days": [entry[0] for entry in chosen],
        "leads": leads,
        "mean_lead": sum(leads) / len(leads),
    }


def partition_versions(settings: Settings, days: list[str]) -> list[dict]:
    """Return the warehouse data version of each day, for lineage (None for an unpublished day)."""
    with connect(settings.warehouse_path, read_only=True) as con:
        found = dict(
            con.execute(
                "SELECT strftime(event_day, '%Y-%m-%d'), data_version FROM partitions WHERE event_day IN "
                "(SELECT unnest(?::DATE[]))",
                [days],
            ).fetchall()
        )
    return [{"day": day, "data_version": found.get(day)} for day in days]


def prequential_record_path(settings: Settings, day: date) -> str:
    """Return the path of a day's prequential record, for lineage and reports."""
    return str(record_path(settings, PREQUENTIAL_STAGE, day))
