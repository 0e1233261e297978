"""End to end: a slice of the real UCI Online Retail data through the Dagster daily loop."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from freshrank.config import load_settings
from freshrank.importers import import_dataset
from freshrank.increments import landed_days
from freshrank.records import read_record
from freshrank.warehouse import connect
from models.lifecycle import registry_for
from orchestration.replay import replay

UCI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "uci-online-retail" / "derived" / "online_retail.parquet"
DAYS = 6

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not UCI.exists(), reason=f"UCI Online Retail not found at {UCI}"),
]


@pytest.fixture(scope="module")
def uci_loop(tmp_path_factory):
    settings = load_settings(tmp_path_factory.mktemp("uci_home"))
    report = import_dataset("online-retail", UCI, settings.landing_dir, max_days=DAYS)
    runs = replay(settings, landed_days(settings.landing_dir))
    return settings, report, runs


def test_all_days_succeed(uci_loop):
    _, _, runs = uci_loop
    assert [run.day for run in runs if not run.success] == []


def test_first_days_imported(uci_loop):
    _, report, runs = uci_loop
    assert [run.day for run in runs] == ["2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05", "2010-12-06", "2010-12-07"]
    assert report.days == [run.day for run in runs]


def test_cleaning_counts_recorded(uci_loop):
    settings, _, _ = uci_loop
    with connect(settings.warehouse_path, read_only=True) as con:
        totals = con.execute(
            "SELECT sum(rows_in), sum(rows_published), sum(duplicates_dropped), sum(returns_set_aside) FROM partitions"
        ).fetchone()
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        returns = con.execute("SELECT count(*) FROM returns").fetchone()[0]
    rows_in, published, duplicates, set_aside = (int(value) for value in totals)
    assert published == events
    assert set_aside == returns
    assert duplicates > 0
    assert rows_in == published + duplicates + set_aside


def test_purchase_only_labels(uci_loop):
    settings, _, _ = uci_loop
    record = read_record(settings, "training_rows", date(2010, 12, 7))
    assert record["labelling"] == "sampled_negatives"
    assert record["positives"] > 0
    assert record["rows"] > record["positives"]


def test_champion_deployed_with_lineage(uci_loop):
    settings, _, _ = uci_loop
    registry = registry_for(settings)
    champion = registry.champion()
    assert champion is not None
    partitions = registry.metadata(champion)["lineage"]["training_partitions"]
    assert all(partition["data_version"] for partition in partitions)


def test_online_probe_matches(uci_loop):
    settings, _, runs = uci_loop
    for run in runs:
        record = read_record(settings, "online_features", date.fromisoformat(run.day))
        assert record["probe_mismatches"] == 0, run.day
