"""Assembly of the Dagster definitions of one freshrank home."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from freshrank.config import Settings, load_settings
from orchestration.alert_sensor import build_alert_sensor
from orchestration.assets import build_assets
from orchestration.report_assets import build_report_assets
from orchestration.resources import FreshrankHome
from orchestration.sensors import build_daily_schedule, build_landing_sensor

DAILY_LOOP_JOB = "daily_loop"


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Build the assets, checks, jobs and resources for a home (default: ``$FRESHRANK_HOME``)."""
    settings = settings or load_settings()
    assets, checks = build_assets(settings)
    assets = [*assets, *build_report_assets(settings)]
    daily_loop = define_asset_job(
        DAILY_LOOP_JOB,
        selection=AssetSelection.all(),
        description="Ingest, validate, compute and materialize features, train, evaluate and deploy one day.",
    )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[daily_loop],
        sensors=[build_landing_sensor(settings, daily_loop), build_alert_sensor(settings)],
        schedules=[build_daily_schedule(settings, daily_loop)],
        resources={"freshrank": FreshrankHome(home=str(settings.home))},
    )
