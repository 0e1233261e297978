"""Tests of staging and quarantine of increments (freshrank.staging) on files under tmp_path."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from freshrank.config import Settings
from freshrank.errors import FreshrankError, IncrementError
from freshrank.increments import read_increment
from freshrank.staging import load_staged, quarantine_increment, stage_increment
from freshrank.warehouse import publish_increment

DAY = date(2024, 3, 5)
CSV_HEADER = "event_time,user_id,item_id,event_type,quantity,price,category,session_id\n"


def deliver(settings: Settings, name: str, text: str, day: date = DAY) -> Path:
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Return every file under ``folder`` by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def delivered(core_settings: Settings) -> Settings:
    """A home whose landing folder contains DAY as two CSV files, one with a row without user."""
    deliver(core_settings, "a.csv", CSV_HEADER + "2024-03-05T10:00:00Z,u1,i1,view,1,9.5,toys,s1\n2024-03-05T10:05:00Z,,i2,view,,,,\n")
    deliver(core_settings, "b.csv", CSV_HEADER + "2024-03-05T11:00:00Z,u2,i1,purchase,2,9.5,toys,s2\n")
    return core_settings


def test_stage_writes_data_and_meta(delivered: Settings) -> None:
    staged = stage_increment(delivered, DAY)
    assert staged.path == delivered.staging_dir / "2024-03-05.parquet"
    assert staged.path.exists()
    assert (delivered.staging_dir / "2024-03-05.json").exists()
    assert staged.rows == 3
    assert [Path(name).name for name in staged.files] == ["a.csv", "b.csv"]


def test_stage_keeps_data_version(delivered: Settings) -> None:
    staged = stage_increment(delivered, DAY)
    assert staged.data_version == read_increment(delivered.landing_dir, DAY, delivered.timezone).data_version


def test_load_round_trip(delivered: Settings) -> None:
    stage_increment(delivered, DAY)
    original = read_increment(delivered.landing_dir, DAY, delivered.timezone)
    loaded = load_staged(delivered, DAY)
    pd.testing.assert_frame_equal(loaded.frame, original.frame)
    assert loaded.files == original.files
    assert loaded.data_version == original.data_version
    assert loaded.file_rows == original.file_rows
    assert loaded.day == DAY


def test_load_unstaged_day_raises(core_settings: Settings) -> None:
    with pytest.raises(FreshrankError, match="no staged increment for 2024-03-05 .*stage the day first"):
        load_staged(core_settings, DAY)


def test_restage_replaces_day(delivered: Settings) -> None:
    first = stage_increment(delivered, DAY)
    deliver(delivered, "b.csv", CSV_HEADER + "2024-03-05T11:00:00Z,u3,i3,view,,,,\n")
    second = stage_increment(delivered, DAY)
    loaded = load_staged(delivered, DAY)
    assert second.data_version != first.data_version
    assert loaded.data_version == second.data_version
    assert loaded.frame["user_id"].tolist()[-1] == "u3"


def test_stage_leaves_no_temporary_files(delivered: Settings) -> None:
    stage_increment(delivered, DAY)
    assert sorted(path.name for path in delivered.staging_dir.iterdir()) == ["2024-03-05.json", "2024-03-05.parquet"]


def test_staged_error_names_file_and_row(delivered: Settings) -> None:
    deliver(delivered, "b.csv", CSV_HEADER + "2024-03-05T11:00:00Z,u2,i1,view,,,,\n2024-03-05T11:00:00Z,u2,i1,wishlist,,,,\n")
    stage_increment(delivered, DAY)
    with pytest.raises(IncrementError, match="row 3: event_type 'wishlist'") as caught:
        publish_increment(delivered.warehouse_path, load_staged(delivered, DAY), delivered.timezone)
    assert caught.value.path.endswith("b.csv")


def quarantine(settings: Settings, version: str, summary: str = "# failed\n") -> Path:
    files = tuple(str(path) for path in sorted((settings.landing_dir / DAY.isoformat()).iterdir()))
    report = {"success": False, "failed": ["expect_column_values_to_be_in_set"], "data_version": version}
    return quarantine_increment(settings, DAY, files, report, summary)


def test_quarantine_copies_bytes(delivered: Settings) -> None:
    folder = quarantine(delivered, "v1")
    assert folder == delivered.quarantine_dir / "2024-03-05" / "v1"
    for source in (delivered.landing_dir / DAY.isoformat()).iterdir():
        assert (folder / source.name).read_bytes() == source.read_bytes(), source.name


def test_quarantine_writes_report(delivered: Settings) -> None:
    folder = quarantine(delivered, "v1", summary="# Validation failed\n\n- event_type\n")
    report = json.loads((folder / "validation.json").read_text())
    assert report["data_version"] == "v1"
    assert report["failed"] == ["expect_column_values_to_be_in_set"]
    assert (folder / "validation.md").read_text() == "# Validation failed\n\n- event_type\n"


def test_quarantine_record(delivered: Settings) -> None:
    folder = quarantine(delivered, "v1")
    record = json.loads((folder / "quarantine.json").read_text())
    assert record["day"] == "2024-03-05"
    assert record["data_version"] == "v1"
    assert [Path(name).name for name in record["files"]] == ["a.csv", "b.csv"]


def test_quarantine_keeps_earlier_version(delivered: Settings) -> None:
    first = quarantine(delivered, "v1", summary="first\n")
    before = tree(first)
    deliver(delivered, "b.csv", CSV_HEADER + "2024-03-05T11:00:00Z,u3,i3,view,,,,\n")
    second = quarantine(delivered, "v2", summary="second\n")
    assert second != first
    assert tree(first) == before
    assert (second / "validation.md").read_text() == "second\n"
    assert (second / "b.csv").read_bytes() == (delivered.landing_dir / DAY.isoformat() / "b.csv").read_bytes()


def test_quarantine_leaves_landing(delivered: Settings) -> None:
    landing = tree(delivered.landing_dir)
    quarantine(delivered, "v1")
    assert tree(delivered.landing_dir) == landing
