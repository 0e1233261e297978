"""End to end: synthetic days through the real Dagster daily loop, with a planted bad day."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from freshrank.alerts import read_alerts
from freshrank.config import load_settings
from freshrank.features import FEATURE_VIEWS, partition_path
from freshrank.increments import landed_days
from freshrank.records import read_record
from freshrank.synthetic import ShopSpec, generate_shop
from freshrank.training_rows import training_rows_path
from freshrank.warehouse import connect
from models.lifecycle import registry_for
from orchestration.replay import replay

BAD_DAY = date(2024, 1, 5)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    settings = load_settings(tmp_path_factory.mktemp("home"))
    generate_shop(settings.landing_dir, ShopSpec(days=7, users=300, items=120, seed=3))
    bad_file = settings.landing_dir / BAD_DAY.isoformat() / "events.parquet"
    frame = pd.read_parquet(bad_file)
    frame.loc[frame.index[:40], "event_type"] = "click"
    frame.to_parquet(bad_file, index=False)
    days = landed_days(settings.landing_dir)
    runs = replay(settings, days)
    return settings, {run.day: run for run in runs}


def test_good_days_succeed(loop):
    _, runs = loop
    for day, run in runs.items():
        if day != BAD_DAY.isoformat():
            assert run.success, f"run of {day} failed"


def test_bad_day_check_fails(loop):
    _, runs = loop
    assert runs[BAD_DAY.isoformat()].check_passed is False


def test_bad_day_only_staged(loop):
    _, runs = loop
    assert runs[BAD_DAY.isoformat()].materialized == ("increment",)


def test_partitions_present(loop):
    settings, _ = loop
    with connect(settings.warehouse_path, read_only=True) as con:
        days = [row[0] for row in con.execute("SELECT event_day FROM partitions ORDER BY 1").fetchall()]
    assert days == [date(2024, 1, d) for d in (1, 2, 3, 4, 6, 7)]


def test_bad_day_left_no_trace(loop):
    settings, _ = loop
    with connect(settings.warehouse_path, read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM events WHERE event_day = ?", [BAD_DAY]).fetchone()[0]
    assert rows == 0
    for view in FEATURE_VIEWS:
        assert not partition_path(settings.offline_dir, view, BAD_DAY).exists(), view
    assert not training_rows_path(settings, BAD_DAY).exists()
    assert read_record(settings, "deployment", BAD_DAY) is None
    assert all(meta["day"] != BAD_DAY.isoformat() for meta in map(registry_for(settings).metadata, registry_for(settings).versions()))


def test_bad_day_quarantined_with_alert(loop):
    settings, _ = loop
    folders = list((settings.quarantine_dir / BAD_DAY.isoformat()).iterdir())
    assert len(folders) == 1
    original = settings.landing_dir / BAD_DAY.isoformat() / "events.parquet"
    assert (folders[0] / "events.parquet").read_bytes() == original.read_bytes()
    assert "event_type" in (folders[0] / "validation.md").read_text()
    kinds = [(alert["kind"], alert["day"]) for alert in read_alerts(settings)]
    assert ("data_quality", BAD_DAY.isoformat()) in kinds


def test_online_values_equal_offline(loop):
    settings, runs = loop
    for day in runs:
        if day == BAD_DAY.isoformat():
            continue
        record = read_record(settings, "online_features", date.fromisoformat(day))
        assert record["probe_values"] > 0, day
        assert record["probe_mismatches"] == 0, (day, record["mismatches"][:3])


def test_model_chain_and_lineage(loop):
    settings, _ = loop
    registry = registry_for(settings)
    champion = registry.champion()
    assert champion is not None
    chain = registry.lineage(champion)
    assert chain[-1]["kind"] == "full"
    for record in chain[:-1]:
        assert record["kind"] == "continued"
    parents = [record["parent"] for record in chain[:-1]]
    assert parents == [record["version"] for record in chain[1:]]


def test_deployed_lineage_complete(loop):
    settings, _ = loop
    registry = registry_for(settings)
    lineage = registry.metadata(registry.champion())["lineage"]
    assert lineage["training_partitions"], "no training partitions recorded"
    for partition in lineage["training_partitions"]:
        assert partition["data_version"], partition
        assert partition["validation_report"], partition
    assert lineage["reports"]["prequential_evaluation"]


def test_champion_unchanged_by_bad_day(loop):
    settings, _ = loop
    before = read_record(settings, "deployment", date(2024, 1, 4))["champion"]
    history = registry_for(settings).history()
    deployed_between = [event for event in history if "2024-01-05" in event.get("reason", "")]
    assert before is not None
    assert deployed_between == []
