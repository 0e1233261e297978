"""Replaying landed days through the daily-loop job, in this process, one day after the other."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Callable

from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.instance.ref import InstanceRef

from freshrank.config import Settings
from freshrank.retrieval_window import every_view_has_a_partition
from freshrank.warehouse import published_rows
from orchestration.build import DAILY_LOOP_JOB, build_definitions
from orchestration.stages import day_stages

BRANCH_TAG = "freshrank/branch"
"""Run tag naming the branch of the day a run executed (``all`` for a single run of the day)."""
NO_COMPUTE_LOGS = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayRun:
    """Outcome of one day's daily loop: one Dagster run, or one per branch (see ``orchestration.stages``)."""

    day: str
    run_ids: tuple[str, ...]
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
    if not settings.orchestration.concurrent_branches:
        return DagsterInstance.from_config(str(home))
    # Concurrent runs in one process share its stdout and stderr. Dagster captures an
    # in-process run by swapping the process's file descriptors. Two runs that restore them
    # out of order leave the process writing into a run's log file, so these runs capture
    # no output. Their Python logs stay in the event log.
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=NO_COMPUTE_LOGS))
    if not instance.get_python_log_dagster_handler_config():
        # Dagster calls logging.config.dictConfig at the start of every run, even with no
        # handlers configured. The call takes the logging module's lock and then each
        # handler's, so it deadlocks with a concurrent run of this process that is logging.
        # Without configured handlers it only closes the process's handlers: skip it.
        instance.get_yaml_python_handlers = lambda: []
    return instance


def run_day(
    settings: Settings,
    day: date,
    instance: DagsterInstance,
    defs=None,
    assets: list[AssetKey] | None = None,
) -> DayRun:
    """Run the daily loop (or the given assets of it) for one partition.

    A failed blocking check skips everything that depends on the checked asset.

    Args:
        settings: Settings of the home.
        day: The partition.
        instance: The home's Dagster instance.
        defs: The home's definitions; built when not given.
        assets: The assets to run; default all.

    With ``orchestration.concurrent_branches`` (the default) the day runs as an ingest
    run, then the online write and the model branch as two concurrent runs, then a deploy
    run (``orchestration.stages``); the instance must come from ``dagster_instance`` with
    the same setting. Otherwise the day is one run of all the assets.
    """
    defs = defs or build_definitions(settings)
    if not settings.orchestration.concurrent_branches:
        return _day_run(day, [_execute(defs, day, instance, assets, "all")])
    results = []
    for stage in day_stages(defs, assets):
        if len(stage) == 1 or not branches_may_overlap(settings, day):
            for branch in stage:
                results.append(_execute(defs, day, instance, branch.assets, branch.name))
                if not results[-1].success:
                    break
        else:
            with ThreadPoolExecutor(max_workers=len(stage), thread_name_prefix=f"freshrank-{day}") as pool:
                futures = [pool.submit(_execute, defs, day, instance, b.assets, b.name) for b in stage]
                results.extend(future.result() for future in futures)
        if not all(result.success for result in results) or _check_passed(results) is False:
            break
    return _day_run(day, results)


def branches_may_overlap(settings: Settings, day: date) -> bool:
    """Return whether the branches of ``day`` may run at the same time.

    The model branch joins training rows against the feature partitions; a home's first
    day has none until the online branch computes the day's own. A day with more events
    than ``orchestration.concurrent_branches_max_events`` runs its branches in turn, so
    that the process keeps the memory of one branch at a time.
    """
    if not every_view_has_a_partition(settings):
        return False
    events = published_rows(settings.warehouse_path, day)
    limit = settings.orchestration.concurrent_branches_max_events
    if events is not None and events > limit:
        logger.info("day %s: %d events, over %d, so its branches run one after the other", day, events, limit)
        return False
    return True


def _execute(defs, day: date, instance: DagsterInstance, assets, branch: str):
    """Execute one Dagster run of the daily-loop job for ``day`` in this process."""
    job = defs.resolve_job_def(DAILY_LOOP_JOB)
    result = job.execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        raise_on_error=False,
        asset_selection=None if assets is None else list(assets),
        tags={BRANCH_TAG: branch},
        # Dagster's console logger would print each failure with its stack trace. The failed
        # steps are logged below in one line each, and the full events stay in the instance.
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                _log_step_failure(day, event.step_key, event.event_specific_data.error)
    return result


def _log_step_failure(day: date, step: str, error) -> None:
    """Log a failed step in one line: a failed validation check as a warning, any other failure as an error."""
    if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
        logger.warning("day %s: validation failed, so the increment is quarantined and its downstream steps are skipped", day)
        return
    message = error.message.strip() if error is not None else "no error recorded"
    logger.error("day %s step %s failed: %s (the Dagster run log has the stack trace)", day, step, message)


def _check_passed(results) -> bool | None:
    """Return the outcome of the increment's validation check in these runs, None when it did not run."""
    for result in results:
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.asset_check_key == AssetCheckKey.from_user_string("increment:check_increment_valid"):
                return evaluation.passed
    return None


def _day_run(day: date, results) -> DayRun:
    materialized = tuple(
        sorted(
            event.asset_key.to_user_string()
            for result in results
            for event in result.get_asset_materialization_events()
        )
    )
    step_seconds = {
        event.step_key: event.event_specific_data.duration_ms / 1000.0
        for result in results
        for event in result.all_events
        if event.is_step_success
    }
    success = all(result.success for result in results)
    return DayRun(
        day.isoformat(), tuple(r.run_id for r in results), success, _check_passed(results), materialized, step_seconds
    )


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
    complete_interrupted: bool = True,
) -> list[DayRun]:
    """Plan the runs for new and changed landed days, as the sensor does, and execute them in order.

    With ``complete_interrupted``, days whose earlier runs were interrupted after their
    ingest run are completed too (see ``orchestration.changes.interrupted_days``).
    """
    from orchestration.changes import plan_runs

    instance = instance or dagster_instance(settings)
    defs = defs or build_definitions(settings)
    runs = []
    for planned in plan_runs(settings, instance, complete_interrupted=complete_interrupted):
        outcome = run_day(settings, date.fromisoformat(planned.partition), instance, defs, planned.asset_keys)
        runs.append(outcome)
        if on_day is not None:
            on_day(outcome)
    return runs
