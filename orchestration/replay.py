"""Replaying landed days through the daily-loop job, one Dagster run per day."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from typing import Callable

from dagster import AssetCheckKey, AssetKey, DagsterInstance

from freshrank.config import Settings
from orchestration.build import DAILY_LOOP_JOB, build_definitions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayRun:
    """Outcome of one day's run of the daily loop."""

    day: str
    run_id: str
    success: bool
    check_passed: bool | None
    materialized: tuple[str, ...]
    step_seconds: dict[str, float]


def dagster_instance(settings: Settings) -> DagsterInstance:
    """Open the persistent Dagster instance under the home, so the UI shows the demo's runs."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # One run at a time: the runs of a correction must execute in partition order.
        config.write_text(
            "telemetry:\n  enabled: false\n"
            "concurrency:\n  runs:\n"
            f"    max_concurrent_runs: {settings.orchestration.max_concurrent_runs}\n"
        )
    return DagsterInstance.from_config(str(home))


def run_day(
    settings: Settings, day: date, instance: DagsterInstance, defs=None, assets: list[AssetKey] | None = None
) -> DayRun:
    """Run the daily loop (or the given assets of it) for one partition.

    A failed blocking check skips everything that depends on the checked asset.
    """
    defs = defs or build_definitions(settings)
    job = defs.resolve_job_def(DAILY_LOOP_JOB)
    result = job.execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        raise_on_error=False,
        asset_selection=assets,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    materialized = tuple(
        sorted(event.asset_key.to_user_string() for event in result.get_asset_materialization_events())
    )
    check_passed = None
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.asset_check_key == AssetCheckKey.from_user_string("increment:check_increment_valid"):
            check_passed = evaluation.passed
    step_seconds = {
        event.step_key: event.event_specific_data.duration_ms / 1000.0
        for event in result.all_events
        if event.is_step_success
    }
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                logger.error("day %s step %s failed: %s", day, event.step_key, event.event_specific_data.error)
    return DayRun(day.isoformat(), result.run_id, result.success, check_passed, materialized, step_seconds)


def replay(
    settings: Settings, days: list[date], on_day: Callable[[DayRun], None] | None = None
) -> list[DayRun]:
    """Run the daily loop for each day in order, in a persistent instance under the home."""
    instance = dagster_instance(settings)
    defs = build_definitions(settings)
    runs = []
    for day in days:
        outcome = run_day(settings, day, instance, defs)
        runs.append(outcome)
        if on_day is not None:
            on_day(outcome)
    return runs




def run_changes(
    settings: Settings,
    on_day: Callable[[DayRun], None] | None = None,
    instance: DagsterInstance | None = None,
    defs=None,
) -> list[DayRun]:
    """Plan the runs for new and changed landed days, as the sensor does, and execute them in order."""
    from orchestration.changes import plan_runs

    instance = instance or dagster_instance(settings)
    defs = defs or build_definitions(settings)
    runs = []
    for planned in plan_runs(settings, instance):
        outcome = run_day(settings, date.fromisoformat(planned.partition), instance, defs, planned.asset_keys)
        runs.append(outcome)
        if on_day is not None:
            on_day(outcome)
    return runs
