"""Module-level job accessors, so Dagster can rebuild a job in child processes (multiprocess executor)."""

from __future__ import annotations

from freshrank.config import load_settings
from orchestration.build import DAILY_LOOP_JOB, build_definitions


def daily_loop_job():
    """Return the daily-loop job of the home in ``$FRESHRANK_HOME``."""
    return build_definitions(load_settings()).resolve_job_def(DAILY_LOOP_JOB)
