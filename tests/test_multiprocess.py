"""The daily loop under Dagster's multiprocess executor: each step in its own process, same results."""

from __future__ import annotations

from datetime import date

import pytest
from dagster import execute_job, reconstructable

from freshrank.config import load_settings
from freshrank.records import read_record
from freshrank.synthetic import ShopSpec, generate_shop
from orchestration.jobs import daily_loop_job
from orchestration.replay import dagster_instance


def test_multiprocess_day(tmp_path, monkeypatch):
    settings = load_settings(tmp_path / "home")
    monkeypatch.setenv("FRESHRANK_HOME", str(settings.home))
    generate_shop(settings.landing_dir, ShopSpec(days=1, users=100, items=40, seed=4, start=date(2024, 5, 1)))
    instance = dagster_instance(settings)
    result = execute_job(
        reconstructable(daily_loop_job),
        instance=instance,
        tags={"dagster/partition": "2024-05-01"},
        run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}},
    )
    assert result.success
    pids = {event.pid for event in result.all_events if event.is_step_success}
    assert len(pids) > 1
    assert read_record(settings, "events", date(2024, 5, 1))["rows_published"] > 0
    assert read_record(settings, "online_features", date(2024, 5, 1))["probe_mismatches"] == 0
