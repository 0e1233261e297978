"""Tests of publishing increments to the DuckDB warehouse (freshrank.warehouse): cleaning, idempotence, atomicity."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from freshrank.config import Settings, load_settings
from freshrank.errors import IncrementError
from freshrank.increments import read_increment
from freshrank.warehouse import (
    connect,
    partition_rows,
    publish_increment,
    published_row_counts,
    read_events,
)

DAY = date(2024, 3, 5)
NEXT_DAY = date(2024, 3, 6)
TABLES = ("events", "returns", "partitions")


def event(when: str, user: str | None, item: str, event_type: str = "view", quantity: float = 1.0) -> dict:
    return {
        "event_time": pd.Timestamp(when, tz="UTC"),
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "quantity": quantity,
        "price": 4.0,
        "category": "toys",
        "session_id": "s1",
    }


def messy_day() -> pd.DataFrame:
    """Six rows of DAY: one exact duplicate, one return, one view without a user."""
    return pd.DataFrame(
        [
            event("2024-03-05 10:00", "u1", "i1"),
            event("2024-03-05 10:00", "u1", "i1"),
            event("2024-03-05 10:05", "u1", "i1", "purchase", 2.0),
            event("2024-03-05 11:00", "u2", "i2", "purchase", -1.0),
            event("2024-03-05 12:00", None, "i3"),
            event("2024-03-05 13:00", "u2", "i3", "add_to_cart"),
        ]
    )


def snapshot(settings: Settings) -> dict[str, pd.DataFrame]:
    """Return every warehouse table, sorted so that equal tables compare equal."""
    with connect(settings.warehouse_path) as con:
        return {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").df() for table in TABLES}


def land(settings: Settings, day: date, frame: pd.DataFrame, name: str = "events.parquet") -> None:
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    path = folder / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def publish(settings: Settings, day: date, frame: pd.DataFrame, name: str = "events.parquet"):
    land(settings, day, frame, name)
    return publish_increment(settings.warehouse_path, read_increment(settings.landing_dir, day, settings.timezone), settings.timezone)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tmp_path / "home")


@pytest.fixture
def published(settings: Settings) -> Settings:
    """A warehouse holding DAY (the messy day) and NEXT_DAY (two clean rows)."""
    publish(settings, DAY, messy_day())
    publish(settings, NEXT_DAY, pd.DataFrame([event("2024-03-06 09:00", "u1", "i2"), event("2024-03-06 09:30", "u3", "i1")]))
    return settings


def test_publish_report_counts(settings: Settings) -> None:
    report = publish(settings, DAY, messy_day())
    assert report.day == "2024-03-05"
    assert report.rows_in == 6
    assert report.duplicates_dropped == 1
    assert report.returns_set_aside == 1
    assert report.rows_without_user == 1
    assert report.rows_published == 4


def test_every_row_accounted_for(settings: Settings) -> None:
    report = publish(settings, DAY, messy_day())
    assert report.rows_in == report.rows_published + report.duplicates_dropped + report.returns_set_aside


def test_events_table_after_cleaning(settings: Settings) -> None:
    publish(settings, DAY, messy_day())
    events = read_events(settings.warehouse_path, DAY, DAY)
    assert len(events) == 4
    assert (events["quantity"] > 0).all()
    assert events["user_id"].isna().sum() == 1
    assert set(events["event_day"].dt.date) == {DAY}


def test_return_set_aside(settings: Settings) -> None:
    publish(settings, DAY, messy_day())
    returns = snapshot(settings)["returns"]
    assert returns["user_id"].tolist() == ["u2"]
    assert returns["quantity"].tolist() == [-1.0]


def test_duplicate_returns_dropped_once(settings: Settings) -> None:
    frame = pd.DataFrame([event("2024-03-05 11:00", "u2", "i2", "purchase", -1.0)] * 2)
    report = publish(settings, DAY, frame)
    assert report.duplicates_dropped == 1
    assert report.returns_set_aside == 1
    assert report.rows_published == 0


def test_partition_row_recorded(settings: Settings) -> None:
    report = publish(settings, DAY, messy_day())
    row = partition_rows(settings.warehouse_path).iloc[0]
    assert row["event_day"].date() == DAY
    assert row["data_version"] == report.data_version
    assert row["rows_in"] == 6
    assert row["rows_published"] == 4
    assert row["duplicates_dropped"] == 1
    assert row["returns_set_aside"] == 1
    assert row["rows_without_user"] == 1


def test_republish_gives_identical_tables(published: Settings) -> None:
    before = snapshot(published)
    report = publish(published, DAY, messy_day())
    after = snapshot(published)
    pd.testing.assert_frame_equal(after["events"], before["events"])
    pd.testing.assert_frame_equal(after["returns"], before["returns"])
    pd.testing.assert_frame_equal(
        after["partitions"].drop(columns="published_at"), before["partitions"].drop(columns="published_at")
    )
    assert report.rows_published == 4


def test_outside_day_rejected_unchanged(published: Settings) -> None:
    before = snapshot(published)
    frame = pd.DataFrame([event("2024-03-05 10:00", "u9", "i9"), event("2024-03-06 00:00", "u9", "i9")])
    with pytest.raises(IncrementError, match="1 event\\(s\\) fall outside 2024-03-05 in UTC, the first at row 3") as caught:
        publish(published, DAY, frame, "late.csv")
    assert caught.value.path.endswith("late.csv")
    after = snapshot(published)
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def test_unknown_event_type_rejected_unchanged(published: Settings) -> None:
    before = snapshot(published)
    frame = pd.DataFrame([event("2024-03-05 10:00", "u9", "i9"), event("2024-03-05 10:01", "u9", "i9", "click")])
    with pytest.raises(IncrementError, match="row 2: event_type 'click' is not one of view, add_to_cart, purchase") as caught:
        publish(published, DAY, frame)
    assert caught.value.path.endswith("events.parquet")
    after = snapshot(published)
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def test_zero_quantity_rejected_unchanged(published: Settings) -> None:
    before = snapshot(published)
    frame = pd.DataFrame([event("2024-03-05 10:00", "u9", "i9"), event("2024-03-05 10:01", "u9", "i9", "purchase", 0.0)])
    with pytest.raises(IncrementError, match="row 3: quantity is 0; it must be positive") as caught:
        publish(published, DAY, frame, "zero.csv")
    assert caught.value.path.endswith("zero.csv")
    after = snapshot(published)
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def test_error_names_second_file_and_row(settings: Settings) -> None:
    folder = settings.landing_dir / DAY.isoformat()
    folder.mkdir(parents=True)
    pd.DataFrame([event("2024-03-05 10:00", "u1", "i1")] * 3).to_csv(folder / "a.csv", index=False)
    pd.DataFrame([event("2024-03-05 10:00", "u1", "i1"), event("2024-03-05 10:00", "u1", "i1", "like")]).to_csv(
        folder / "b.csv", index=False
    )
    increment = read_increment(settings.landing_dir, DAY, settings.timezone)
    with pytest.raises(IncrementError, match="row 3: event_type 'like'") as caught:
        publish_increment(settings.warehouse_path, increment, settings.timezone)
    assert caught.value.path == str(folder / "b.csv")


def test_failed_insert_rolls_back(published: Settings) -> None:
    # A null item_id passes the checks but violates NOT NULL after the day's rows were deleted.
    before = snapshot(published)
    increment = read_increment(published.landing_dir, DAY, published.timezone)
    broken = increment.frame.copy()
    broken.loc[0, "item_id"] = pd.NA
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        publish_increment(published.warehouse_path, replace(increment, frame=broken), published.timezone)
    after = snapshot(published)
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def test_day_counted_in_business_zone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "freshrank.yaml").write_text("timezone: Europe/Berlin\n")
    settings = load_settings(home)
    # 23:30 UTC on 4 March is 00:30 on 5 March in Berlin.
    report = publish(settings, DAY, pd.DataFrame([event("2024-03-04 23:30", "u1", "i1")]))
    assert report.rows_published == 1
    late = pd.DataFrame([event("2024-03-05 23:30", "u1", "i1")])
    with pytest.raises(IncrementError, match="fall outside 2024-03-05 in Europe/Berlin"):
        publish(settings, DAY, late)


def test_corrected_day_replaces_only_it(published: Settings) -> None:
    before = snapshot(published)
    corrected = pd.DataFrame([event("2024-03-05 15:00", "u7", "i7", "purchase", 3.0)])
    report = publish(published, DAY, corrected)
    after = snapshot(published)
    day_events = after["events"][after["events"]["event_day"].dt.date == DAY]
    assert day_events["user_id"].tolist() == ["u7"]
    assert after["returns"].empty
    next_before = before["events"][before["events"]["event_day"].dt.date == NEXT_DAY].reset_index(drop=True)
    next_after = after["events"][after["events"]["event_day"].dt.date == NEXT_DAY].reset_index(drop=True)
    pd.testing.assert_frame_equal(next_after, next_before)
    versions = after["partitions"].set_index(after["partitions"]["event_day"].dt.date)["data_version"]
    old_versions = before["partitions"].set_index(before["partitions"]["event_day"].dt.date)["data_version"]
    assert versions[DAY] == report.data_version
    assert versions[DAY] != old_versions[DAY]
    assert versions[NEXT_DAY] == old_versions[NEXT_DAY]


def test_read_events_day_range(published: Settings) -> None:
    assert len(read_events(published.warehouse_path, NEXT_DAY, NEXT_DAY)) == 2
    assert len(read_events(published.warehouse_path, DAY, NEXT_DAY)) == 6


def test_published_row_counts_oldest_first(published: Settings) -> None:
    assert published_row_counts(published.warehouse_path, date(2024, 3, 7), 7) == [6, 2]
    assert published_row_counts(published.warehouse_path, NEXT_DAY, 7) == [6]
    assert published_row_counts(published.warehouse_path, date(2024, 3, 7), 1) == [2]


def test_published_row_counts_without_warehouse(settings: Settings) -> None:
    assert published_row_counts(settings.warehouse_path, DAY, 7) == []
