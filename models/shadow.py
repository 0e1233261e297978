"""Shadow full retrains: a full train on the trailing window, on a schedule, never deployed.

A shadow is what a rebase would produce on its day: ``training.full_train_trees`` trees at
``training.learning_rate`` on the trailing ``training.full_train_window_days`` stored days,
without the day's holdout users. It is due every ``training.shadow_every_days`` days,
counted from the later of the last shadow and the champion's last full train, so a chain
that was just rebased is not shadowed again at once. It is evaluated next to the
continued champion twice:

* on its own day's holdout users, next to the day's challenger and the champion (the
  ``shadow_full_retrain`` record and Dagster metadata);
* on each following day's rows, in the prequential evaluation, before anything trains on
  them. Its lead over the champion there feeds the policy's ``degradation`` trigger
  (see ``models.policy``).

Shadows are stored as ``<registry>/shadows/<day>/model.ubj`` with ``shadow.json``, outside
the registry's versions, so a shadow is never deployed or boosted from by accident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import xgboost as xgb

from freshrank.config import Settings
from freshrank.errors import ModelRegistryError
from freshrank.feature_store import model_feature_names
from freshrank.records import read_record
from models.policy import lineage_root, registry_for, trailing_days, training_and_holdout_rows
from models.training import model_size_bytes, score_rows, train_full, training_matrix, training_params, tree_count

logger = logging.getLogger(__name__)

SHADOW_STAGE = "shadow_full_retrain"
"""Stage name of the shadow's per-day record under ``reports/``."""
SHADOW_FOLDER = "shadows"
MODEL_FILE = "model.ubj"
RECORD_FILE = "shadow.json"


@dataclass
class ShadowResult:
    """Outcome of a day's shadow full retrain, or why none ran."""

    day: str
    due: bool
    reason: str
    """Reason the shadow was or was not due, with the dates that decided it."""
    metric: str
    """The gate metric the leads are measured on."""
    champion: str | None = None
    """Champion the day's challenger was trained against."""
    challenger: str | None = None
    """The day's challenger version, if one was registered."""
    trees: int = 0
    training_days: list[str] = field(default_factory=list)
    training_rows: int = 0
    holdout_rows: int = 0
    train_seconds: float = 0.0
    """Wall time of the XGBoost training, in seconds."""
    train_cpu_seconds: float = 0.0
    """CPU time of this process (all threads) during the XGBoost training, in seconds."""
    model_bytes: int = 0
    """Size of the model as XGBoost UBJSON, in bytes."""
    model_path: str | None = None
    shadow_holdout: dict = field(default_factory=dict)
    champion_holdout: dict = field(default_factory=dict)
    challenger_holdout: dict = field(default_factory=dict)
    lead_over_champion: float | None = None
    """Shadow minus champion on ``metric`` over the day's holdout rows."""
    lead_over_challenger: float | None = None
    """Shadow minus the day's challenger on ``metric`` over the day's holdout rows."""
    skipped_reason: str | None = None
    """Reason a due shadow was not trained (for example, rows with one label value only)."""

    def to_dict(self) -> dict:
        return asdict(self)


class ShadowStore:
    """Shadow models under ``<registry>/shadows/<day>/``, one per day, each with its record.

    Args:
        root: The shadows folder (``Settings.registry_dir / "shadows"``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, settings: Settings) -> ShadowStore:
        """Open the shadow store of a home."""
        return cls(settings.registry_dir / SHADOW_FOLDER)

    def save(self, day: str, booster: xgb.Booster, record: dict) -> Path:
        """Store a day's shadow, replacing an earlier one of the same day; return the model path.

        The folder is written under a temporary name and renamed into place, so a reader sees
        the old shadow or the new one, except for the moment between the two renames of a
        replacement, when the day has none.
        """
        model_bytes = bytes(booster.save_raw("ubj"))
        record = {**record, "day": day, "model_sha256": hashlib.sha256(model_bytes).hexdigest()}
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            (staging / MODEL_FILE).write_bytes(model_bytes)
            (staging / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
            target = self.root / day
            retired = None
            if target.exists():
                retired = self.root / f".old-{uuid.uuid4().hex}"
                os.rename(target, retired)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return target / MODEL_FILE

    def days(self) -> list[str]:
        """Return the days that have a shadow, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(path.name for path in self.root.iterdir() if path.is_dir() and not path.name.startswith("."))

    def latest_day(self, before: date) -> str | None:
        """Return the newest shadow day before ``before``, or None."""
        earlier = [day for day in self.days() if day < before.isoformat()]
        return earlier[-1] if earlier else None

    def record(self, day: str) -> dict:
        """Return the stored record of a day's shadow.

        Raises:
            ModelRegistryError: The day has no shadow.
        """
        path = self.root / day / RECORD_FILE
        if not path.exists():
            raise ModelRegistryError(f"no shadow model for {day} under {self.root}; shadows exist for {self.days()}")
        return json.loads(path.read_text())

    def load(self, day: str) -> xgb.Booster:
        """Load a day's shadow model after checking it against its recorded sha256.

        Raises:
            ModelRegistryError: The day has no shadow, or its model file was altered.
        """
        record = self.record(day)
        path = self.root / day / MODEL_FILE
        model_bytes = path.read_bytes()
        digest = hashlib.sha256(model_bytes).hexdigest()
        if digest != record["model_sha256"]:
            raise ModelRegistryError(
                f"{path}: sha256 {digest} differs from the recorded {record['model_sha256']}; "
                "the file was altered. Delete the folder and run the shadow retrain of that day again."
            )
        booster = xgb.Booster()
        booster.load_model(bytearray(model_bytes))
        return booster


def shadow_schedule(settings: Settings, day: date, champion: str | None, challenger_kind: str | None) -> tuple[bool, str]:
    """Decide whether a shadow full retrain is due on ``day``.

    Args:
        settings: Settings of the home (``training.shadow_every_days``).
        day: The partition.
        champion: Champion the day's challenger was trained against.
        challenger_kind: Kind of the day's challenger; a full challenger is already what a
            shadow would be, so no shadow is due then.

    Returns:
        ``(due, reason)``.
    """
    every = settings.training.shadow_every_days
    if every <= 0:
        return False, "shadow retrains are off (training.shadow_every_days is 0)"
    if champion is None:
        return False, "no champion to compare a shadow with yet"
    if challenger_kind == "full":
        return False, f"the challenger of {day} is a full train already"
    root = lineage_root(registry_for(settings), champion)
    last_shadow = ShadowStore.of(settings).latest_day(before=day)
    since, what = root["day"], f"the champion's last full train ({root['version']})"
    if last_shadow is not None and last_shadow > since:
        since, what = last_shadow, "the last shadow"
    age = (day - date.fromisoformat(since)).days
    if age < every:
        next_day = date.fromisoformat(since) + timedelta(days=every)
        return False, f"not due: {what} was on {since}, {age} days ago; shadows run every {every} days, next on {next_day}"
    return True, f"due: {what} was on {since}, {age} days ago; shadows run every {every} days"


def shadow_full_retrain(settings: Settings, day: date) -> ShadowResult:
    """Train the day's shadow when it is due and score it next to the challenger and the champion.

    Reads the day's ``challenger_model`` record for the champion, the challenger and their
    holdout metrics, which come from the same holdout rows as the shadow's.

    Args:
        settings: Settings of the home.
        day: The partition.

    Returns:
        The shadow's record; ``due`` is False with the reason on days it is not due.
    """
    challenger = read_record(settings, "challenger_model", day) or {}
    champion = challenger.get("champion", challenger.get("parent"))
    due, reason = shadow_schedule(settings, day, champion, challenger.get("kind"))
    result = ShadowResult(day.isoformat(), due, reason, settings.gate.metric, champion, challenger.get("version"))
    if not due:
        logger.info("no shadow retrain on %s: %s", day, reason)
        return result

    columns = model_feature_names(settings)
    training_days = trailing_days(settings, day, settings.training.full_train_window_days)
    train, holdout = training_and_holdout_rows(settings, training_days, day)
    result.training_days = [d.isoformat() for d in training_days]
    result.training_rows, result.holdout_rows = len(train), len(holdout)
    labels = set(train["label"].unique()) if not train.empty else set()
    if labels != {0, 1}:
        result.skipped_reason = f"training rows hold labels {sorted(labels)}; both 0 and 1 are needed"
        logger.warning("no shadow for %s: %s", day, result.skipped_reason)
        return result

    wall, cpu = time.perf_counter(), time.process_time()
    # The matrix is built first, so the frame is freed while XGBoost trains.
    dtrain = training_matrix(train, columns, quantized=True)
    del train
    booster = train_full(dtrain, columns, settings.training)
    del dtrain
    result.train_seconds = time.perf_counter() - wall
    result.train_cpu_seconds = time.process_time() - cpu
    result.trees = tree_count(booster)
    result.model_bytes = model_size_bytes(booster)
    _score_next_to_chain(settings, result, booster, holdout, challenger)
    record = {**result.to_dict(), "params": training_params(settings.training, learning_rate=settings.training.learning_rate)}
    result.model_path = str(ShadowStore.of(settings).save(day.isoformat(), booster, record))
    logger.info(
        "shadow of %s: %d trees, lead %s over the champion and %s over the challenger on holdout %s",
        day, result.trees, result.lead_over_champion, result.lead_over_challenger, settings.gate.metric,
    )
    return result


def _score_next_to_chain(settings: Settings, result: ShadowResult, booster: xgb.Booster, holdout, challenger: dict) -> None:
    """Fill the holdout metrics of the shadow, champion and challenger, and the shadow's leads."""
    columns = model_feature_names(settings)
    threshold = settings.gate.operating_threshold
    result.shadow_holdout = score_rows(booster, holdout, columns, threshold)
    result.champion_holdout = challenger.get("champion_holdout") or {}
    result.challenger_holdout = challenger.get("challenger_holdout") or {}
    if not result.champion_holdout and result.champion is not None:
        result.champion_holdout = score_rows(registry_for(settings).load(result.champion), holdout, columns, threshold)
    result.lead_over_champion = _lead(result.shadow_holdout, result.champion_holdout, result.metric)
    result.lead_over_challenger = _lead(result.shadow_holdout, result.challenger_holdout, result.metric)


def latest_shadow_for(settings: Settings, day: date, full_train_day: str) -> str | None:
    """Return the newest shadow day before ``day`` that is newer than ``full_train_day``, or None."""
    latest = ShadowStore.of(settings).latest_day(before=day)
    if latest is None or latest <= full_train_day:
        return None
    return latest


def _lead(first: dict, second: dict, metric: str) -> float | None:
    if first.get(metric) is None or second.get(metric) is None:
        return None
    return float(first[metric]) - float(second[metric])
