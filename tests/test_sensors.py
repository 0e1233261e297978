"""The landing sensor and the daily schedule request the same runs, and none once the days are computed."""

from __future__ import annotations

from datetime import date

import pytest
from dagster import AssetKey, SkipReason, build_schedule_context, build_sensor_context

from freshrank.config import load_settings
from freshrank.synthetic import ShopSpec, generate_shop
from orchestration.build import build_definitions
from orchestration.changes import ALL_ASSETS
from orchestration.replay import dagster_instance, run_changes
from orchestration.sensors import DAILY_SCHEDULE, LANDING_SENSOR


@pytest.fixture()
def landed(tmp_path):
    settings = load_settings(tmp_path / "home")
    generate_shop(settings.landing_dir, ShopSpec(days=2, users=120, items=50, seed=9, start=date(2024, 3, 1)))
    return settings


def _sensor_requests(settings, instance):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def(LANDING_SENSOR)
    return sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs)).run_requests


def test_sensor_requests_new_days(landed):
    requests = _sensor_requests(landed, dagster_instance(landed))
    assert [request.partition_key for request in requests] == ["2024-03-01", "2024-03-02"]
    assert requests[0].asset_selection == [AssetKey(name) for name in ALL_ASSETS]


def test_sensor_run_keys_unique(landed):
    requests = _sensor_requests(landed, dagster_instance(landed))
    assert len({request.run_key for request in requests}) == len(requests)


def test_schedule_matches_sensor(landed):
    instance = dagster_instance(landed)
    defs = build_definitions(landed)
    schedule = defs.resolve_schedule_def(DAILY_SCHEDULE)
    context = build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    scheduled = schedule.evaluate_tick(context).run_requests
    sensed = _sensor_requests(landed, instance)
    assert [(r.partition_key, r.asset_selection) for r in scheduled] == [(r.partition_key, r.asset_selection) for r in sensed]


def test_sensor_skips_when_up_to_date(landed):
    assert all(run.success for run in run_changes(landed))
    defs = build_definitions(landed)
    sensor = defs.resolve_sensor_def(LANDING_SENSOR)
    result = sensor.evaluate_tick(build_sensor_context(instance=dagster_instance(landed), definitions=defs))
    assert result.run_requests == []
    assert "up to date" in result.skip_message
    assert "not read" not in result.skip_message
    notes = landed.landing_dir / "notes.txt"
    notes.write_text("delivery notes")
    try:
        result = sensor.evaluate_tick(build_sensor_context(instance=dagster_instance(landed), definitions=defs))
    finally:
        notes.unlink()
    assert result.run_requests == []
    assert f"landing entries not read (1): {notes}: not read" in result.skip_message
