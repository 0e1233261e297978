"""Which partitions to recompute: landed content versions against what Dagster recorded.

Each landed day has a data version, a hash of its files' bytes. The ``increment`` asset
records the version it staged as the partition's Dagster data version, so a day needs
work exactly when its landed version differs from the recorded one. The work then
follows the partition mappings of the asset graph:

* a changed day ``k`` re-runs ``increment``, ``events``, the three feature views and
  ``online_features`` for ``k``;
* the feature partitions whose trailing window contains ``k`` (``k .. k + W - 1``) and
  ``online_features`` re-run for those that were computed before;
* ``training_rows`` re-run for ``k .. k + W`` where computed before, because day ``d``'s
  rows use the features of ``d - 1``;
* the model chain (evaluation, challenger, drift, deployment) runs only for days newer
  than the newest day the model has seen. A late or corrected older day does not rewind
  the champion; its corrected rows reach the model through later rounds and rebases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from freshrank.config import Settings
from freshrank.features import FEATURE_VIEWS
from freshrank.increments import (
    increment_files,
    landed_days,
    landing_file_digest,
    outside_landing,
    version_of_digests,
)

DATA_ASSETS: tuple[str, ...] = ("increment", "events", *FEATURE_VIEWS, "online_features")
DOWNSTREAM_FEATURE_ASSETS: tuple[str, ...] = (*FEATURE_VIEWS, "online_features")
MODEL_ASSETS: tuple[str, ...] = (
    "prequential_evaluation",
    "challenger_model",
    "shadow_full_retrain",
    "prediction_drift",
    "deployment",
)
AFTER_CHALLENGER_ASSETS: tuple[str, ...] = ("shadow_full_retrain", "prediction_drift", "deployment")
"""Model assets of a day's deploy run, which starts once its challenger is trained."""
REPORT_ASSETS: tuple[str, ...] = ("daily_report",)
ALL_ASSETS: tuple[str, ...] = (*DATA_ASSETS, "training_rows", *MODEL_ASSETS, *REPORT_ASSETS)
_DIGEST_CACHE = ".landing_digests.json"


@dataclass(frozen=True)
class PlannedRun:
    """One run of the daily-loop job: a partition and the assets to materialize in it."""

    partition: str
    assets: tuple[str, ...]
    reason: str

    @property
    def asset_keys(self) -> list[AssetKey]:
        return [AssetKey(name) for name in self.assets]


class DigestCache:
    """File digests keyed by path, size and modification time, so unchanged files are not re-read.

    A touched file gets a new modification time, is hashed again, and keeps its data
    version when its bytes are the same.
    """

    def __init__(self, settings: Settings) -> None:
        self.path = settings.home / _DIGEST_CACHE
        self.entries: dict[str, list] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.entries = {}
        self.dirty = False

    def digest(self, file: Path, landing: Path) -> str:
        outside = outside_landing(file, landing)
        if outside is not None:
            # Never read a file outside the landing folder; the marker matches the staged digest.
            return landing_file_digest(file, landing)
        stat = file.stat()
        key = str(file)
        cached = self.entries.get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        value = digest.hexdigest()
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.entries))
        os.replace(temporary, self.path)
        self.dirty = False


def landed_versions(settings: Settings, cache: DigestCache | None = None) -> dict[date, str]:
    """Return the data version of every landed day, computed as ``increments.data_version`` does."""
    cache = cache or DigestCache(settings)
    versions = {}
    for day in landed_days(settings.landing_dir):
        digests = [cache.digest(path, settings.landing_dir) for path in increment_files(settings.landing_dir, day)]
        versions[day] = version_of_digests(digests)
    cache.save()
    return versions


def recorded_version(instance: DagsterInstance, asset: str, day: date) -> str | None:
    """Return the data version Dagster recorded for an asset's partition, if it was materialized."""
    record = instance.get_latest_data_version_record(AssetKey(asset), is_source=False, partition_key=day.isoformat())
    if record is None or record.asset_materialization is None:
        return None
    return record.asset_materialization.tags.get("dagster/data_version")


def materialized_days(instance: DagsterInstance, asset: str) -> set[date]:
    """Return the partitions of an asset that have been materialized at least once."""
    return {date.fromisoformat(key) for key in instance.get_materialized_partitions(AssetKey(asset))}


def changed_days(
    settings: Settings, instance: DagsterInstance, landed: dict[date, str] | None = None
) -> dict[date, str]:
    """Return the landed days whose content differs from what ``increment`` recorded, with their versions.

    ``landed`` is the result of ``landed_versions`` when the caller has it already.
    """
    landed = landed_versions(settings) if landed is None else landed
    return {day: version for day, version in landed.items() if recorded_version(instance, "increment", day) != version}


@dataclass(frozen=True)
class Materialized:
    """Days materialized at least once, per downstream asset, read from Dagster once per plan."""

    features: set[date]
    rows: set[date]
    modelled: set[date]
    after_challenger: dict[str, set[date]]

    @classmethod
    def read(cls, instance: DagsterInstance) -> Materialized:
        """Read the materialized days of ``online_features``, ``training_rows`` and the model assets."""
        return cls(
            features=materialized_days(instance, "online_features"),
            rows=materialized_days(instance, "training_rows"),
            modelled=materialized_days(instance, "challenger_model"),
            after_challenger={name: materialized_days(instance, name) for name in AFTER_CHALLENGER_ASSETS},
        )

    @property
    def newest_modelled(self) -> date | None:
        """Return the newest day with a challenger, or None before the first."""
        return max(self.modelled) if self.modelled else None


def plan_runs(settings: Settings, instance: DagsterInstance, complete_interrupted: bool = False) -> list[PlannedRun]:
    """Plan the runs that bring every partition up to date with the landing folder, oldest first.

    With ``complete_interrupted``, a published day whose later runs did not finish (the
    process died after the ingest run, or a branch failed) is planned again for what it
    lacks (see ``interrupted_days``). Only in-process callers set it: they plan while no
    run of the home is in flight, so a missing materialization means an interrupted run.
    """
    landed = landed_versions(settings)
    changed = changed_days(settings, instance, landed)
    materialized = Materialized.read(instance)
    interrupted = interrupted_days(settings, instance, changed, landed, materialized) if complete_interrupted else {}
    if not changed and not interrupted:
        return []
    window = settings.features.max_window_days
    assets: dict[date, set[str]] = {}
    reasons: dict[date, list[str]] = {}

    def add(day: date, names: tuple[str, ...], reason: str) -> None:
        assets.setdefault(day, set()).update(names)
        reasons.setdefault(day, []).append(reason)

    for day, (names, reason) in interrupted.items():
        add(day, names, reason)
    for day in sorted(changed):
        kind = "new" if recorded_version(instance, "increment", day) is None else "changed"
        add(day, DATA_ASSETS + ("training_rows",) + REPORT_ASSETS, f"{kind} increment {changed[day]}")
        if materialized.newest_modelled is None or day > materialized.newest_modelled:
            add(day, MODEL_ASSETS, "newest day: continue the model chain")
        for offset in range(1, window):
            later = day + timedelta(days=offset)
            if later in materialized.features and later not in changed:
                add(later, DOWNSTREAM_FEATURE_ASSETS, f"window contains {day}")
        for offset in range(1, window + 1):
            later = day + timedelta(days=offset)
            if later in materialized.rows and later not in changed:
                add(later, ("training_rows",), f"features of the day before changed ({day})")
    return [
        PlannedRun(day.isoformat(), tuple(name for name in ALL_ASSETS if name in assets[day]), "; ".join(reasons[day]))
        for day in sorted(assets)
    ]


def interrupted_days(
    settings: Settings,
    instance: DagsterInstance,
    changed: dict[date, str] | None = None,
    landed: dict[date, str] | None = None,
    materialized: Materialized | None = None,
) -> dict[date, tuple[tuple[str, ...], str]]:
    """Return the published, unchanged days whose downstream assets are missing, with those assets and why.

    Such a day's events carry its landed version, but something after them is missing.
    Its online features or training rows were never materialized, or it is newer than
    every day with a challenger. Or it is the newest day with a challenger, and its deploy
    run did not finish. The ingest run records the landed version, so ``changed_days`` no
    longer lists a day whose process died or whose branch failed after that run.

    ``changed``, ``landed`` and ``materialized`` are what ``plan_runs`` has read already. Each one
    left out is read here.
    """
    landed = landed_versions(settings) if landed is None else landed
    changed = changed_days(settings, instance, landed) if changed is None else changed
    materialized = Materialized.read(instance) if materialized is None else materialized
    newest_modelled = materialized.newest_modelled
    interrupted: dict[date, tuple[tuple[str, ...], str]] = {}
    for day, version in landed.items():
        if day in changed or recorded_version(instance, "events", day) != version:
            continue
        names: set[str] = set()
        if day not in materialized.features:
            names.update(DOWNSTREAM_FEATURE_ASSETS)
        if day not in materialized.rows:
            names.add("training_rows")
        if newest_modelled is None or day > newest_modelled:
            names.update(("training_rows", *MODEL_ASSETS))
        elif day == newest_modelled:
            names.update(name for name, days in materialized.after_challenger.items() if day not in days)
        if names:
            missing = [name for name in ALL_ASSETS if name in names]
            interrupted[day] = ((*missing, *REPORT_ASSETS), f"interrupted: {', '.join(missing)} not materialized")
    return interrupted
