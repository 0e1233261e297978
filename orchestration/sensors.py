"""The landing-folder sensor and the daily schedule; both request the runs that ``plan_runs`` plans."""

from __future__ import annotations

import hashlib

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SkipReason,
    schedule,
    sensor,
)

from freshrank.config import Settings, load_settings
from freshrank.increments import ignored_landing_entries
from orchestration.changes import plan_runs

LANDING_SENSOR = "landing_sensor"
DAILY_SCHEDULE = "daily_schedule"
_IGNORED_SHOWN = 3
"""Landing entries named in a skip reason. The CLI's `freshrank status` lists them all."""


def run_requests(settings: Settings, instance) -> list[RunRequest]:
    """Turn the planned runs into run requests, oldest partition first.

    The run key names the partition, the assets and the landed versions behind them, so
    a request is made once per change even if the sensor ticks again before it ran.
    """
    requests = []
    for planned in plan_runs(settings, instance):
        digest = hashlib.sha256(f"{planned.partition}|{planned.assets}|{planned.reason}".encode()).hexdigest()[:16]
        requests.append(
            RunRequest(
                run_key=f"{planned.partition}:{digest}",
                partition_key=planned.partition,
                asset_selection=planned.asset_keys,
                tags={"freshrank/reason": planned.reason[:200]},
            )
        )
    return requests


def skip_reason(settings: Settings) -> SkipReason:
    """Return the skip reason of a tick without runs, naming landing entries that no increment reads."""
    ignored = ignored_landing_entries(settings.landing_dir)
    if not ignored:
        return SkipReason("every landed day is up to date")
    named = "; ".join(ignored[:_IGNORED_SHOWN]) + ("; ..." if len(ignored) > _IGNORED_SHOWN else "")
    return SkipReason(f"every landed day is up to date; landing entries not read ({len(ignored)}): {named}")


def build_landing_sensor(settings: Settings, job):
    """Build the sensor that requests runs for new and changed landed days."""

    @sensor(
        name=LANDING_SENSOR,
        job=job,
        minimum_interval_seconds=settings.orchestration.sensor_interval_seconds,
        default_status=DefaultSensorStatus.STOPPED,
        description="Hashes the landing folder and requests runs for days whose content changed, and their dependants.",
    )
    def landing_sensor(context):
        requests = run_requests(load_settings(settings.home), context.instance)
        if not requests:
            return skip_reason(load_settings(settings.home))
        return requests

    return landing_sensor


def build_daily_schedule(settings: Settings, job):
    """Build the schedule that brings the partitions up to date once a day, without the sensor."""

    @schedule(
        name=DAILY_SCHEDULE,
        job=job,
        cron_schedule=settings.orchestration.schedule_cron,
        execution_timezone=settings.timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Runs the daily loop for new and changed landed days at a set hour.",
    )
    def daily_schedule(context):
        requests = run_requests(load_settings(settings.home), context.instance)
        if not requests:
            return skip_reason(load_settings(settings.home))
        return requests

    return daily_schedule
