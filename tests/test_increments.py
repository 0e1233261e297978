"""Tests of reading a day's increment (freshrank.increments): formats, typing, errors, data version, landed days."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from freshrank.errors import IncrementError, MissingIncrementError
from freshrank.increments import (
    Increment,
    data_version,
    day_bounds,
    ignored_landing_entries,
    increment_files,
    landed_days,
    locate_row,
    parse_day,
    read_increment,
)
from freshrank.schema import INCREMENT_COLUMNS

DAY = date(2024, 3, 5)
BERLIN = "Europe/Berlin"
EXPECTED_DTYPES = {
    "event_time": "datetime64[us, UTC]",
    "user_id": "string",
    "item_id": "string",
    "event_type": "string",
    "quantity": "float64",
    "price": "float64",
    "category": "string",
    "session_id": "string",
}


def day_folder(landing: Path, day: date = DAY) -> Path:
    folder = landing / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_text(landing: Path, name: str, text: str, day: date = DAY) -> Path:
    path = day_folder(landing, day) / name
    path.write_text(text)
    return path


def csv_text(*rows: str, header: str = "event_time,user_id,item_id,event_type,quantity,price,category,session_id") -> str:
    return "\n".join((header, *rows)) + "\n"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "home" / "landing"


def test_csv_columns_typed(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,2,9.5,toys,s1"))
    frame = read_increment(landing, DAY, "UTC").frame
    assert list(frame.columns) == list(INCREMENT_COLUMNS)
    for column, dtype in EXPECTED_DTYPES.items():
        assert str(frame[column].dtype) == dtype, column


def test_csv_values_parsed(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z, 007 ,0042,purchase,2,9.5,toys,s1"))
    row = read_increment(landing, DAY, "UTC").frame.iloc[0]
    assert row["event_time"] == utc("2024-03-05 10:00")
    assert row["user_id"] == "007"
    assert row["item_id"] == "0042"
    assert row["event_type"] == "purchase"
    assert row["quantity"] == 2.0
    assert row["price"] == 9.5
    assert row["category"] == "toys"
    assert row["session_id"] == "s1"


def test_empty_cells_become_missing(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,,i1,view,,,,"))
    row = read_increment(landing, DAY, "UTC").frame.iloc[0]
    assert pd.isna(row["user_id"])
    assert row["quantity"] == 1.0
    assert pd.isna(row["price"])
    assert pd.isna(row["category"])
    assert pd.isna(row["session_id"])


def test_optional_columns_may_be_absent(landing: Path) -> None:
    header = "event_time,user_id,item_id,event_type"
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view", header=header))
    frame = read_increment(landing, DAY, "UTC").frame
    assert list(frame.columns) == list(INCREMENT_COLUMNS)
    assert frame["quantity"].tolist() == [1.0]
    assert frame["price"].isna().all()
    assert frame["category"].isna().all()
    assert str(frame["session_id"].dtype) == "string"


def test_parquet_numeric_ids_become_text(landing: Path) -> None:
    frame = pd.DataFrame(
        {
            "event_time": [utc("2024-03-05 10:00"), utc("2024-03-05 11:00")],
            "user_id": [7.0, None],
            "item_id": [42, 43],
            "event_type": ["view", "view"],
        }
    )
    frame.to_parquet(day_folder(landing) / "events.parquet", index=False)
    read = read_increment(landing, DAY, "UTC").frame
    assert read["user_id"].iloc[0] == "7"
    assert pd.isna(read["user_id"].iloc[1])
    assert read["item_id"].tolist() == ["42", "43"]


def test_parquet_with_stored_index_keeps_rows(landing: Path) -> None:
    # A filtered frame written with its index: the index must not shift the default quantity.
    frame = pd.DataFrame(
        {
            "event_time": [utc("2024-03-05 10:00")] * 3,
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i3"],
            "event_type": ["view"] * 3,
        }
    )
    frame.iloc[1:].to_parquet(day_folder(landing) / "events.parquet")
    read = read_increment(landing, DAY, "UTC").frame
    assert read["user_id"].tolist() == ["u2", "u3"]
    assert read["quantity"].tolist() == [1.0, 1.0]


def test_parquet_named_index_is_a_column(landing: Path) -> None:
    frame = pd.DataFrame(
        {"event_time": [utc("2024-03-05 10:00")], "user_id": ["u1"], "item_id": ["i1"], "event_type": ["view"]}
    )
    frame.set_index("user_id").to_parquet(day_folder(landing) / "events.parquet")
    read = read_increment(landing, DAY, "UTC").frame
    assert read["user_id"].tolist() == ["u1"]


def test_jsonl_read(landing: Path) -> None:
    write_text(
        landing,
        "events.jsonl",
        '{"event_time": "2024-03-05T10:00:00Z", "user_id": 7, "item_id": "i1", "event_type": "view", "quantity": 3}\n'
        '{"event_time": "2024-03-05T11:00:00Z", "user_id": null, "item_id": "i2", "event_type": "view"}\n',
    )
    frame = read_increment(landing, DAY, "UTC").frame
    assert frame["user_id"].iloc[0] == "7"
    assert pd.isna(frame["user_id"].iloc[1])
    assert frame["quantity"].tolist() == [3.0, 1.0]
    assert frame["event_time"].tolist() == [utc("2024-03-05 10:00"), utc("2024-03-05 11:00")]


def test_json_array_read(landing: Path) -> None:
    write_text(
        landing,
        "events.json",
        '[{"event_time": "2024-03-05T10:00:00Z", "user_id": "u1", "item_id": "i1", "event_type": "view"},'
        ' {"event_time": "2024-03-05T11:00:00Z", "user_id": "u2", "item_id": "i2", "event_type": "purchase"}]',
    )
    frame = read_increment(landing, DAY, "UTC").frame
    assert frame["user_id"].tolist() == ["u1", "u2"]
    assert frame["event_type"].tolist() == ["view", "purchase"]


def test_truncated_json_names_file(landing: Path) -> None:
    path = write_text(landing, "events.json", '[{"event_time": "2024-03-05T10:00:00Z", "user_id": ')
    with pytest.raises(IncrementError, match="cannot read the file as json") as caught:
        read_increment(landing, DAY, "UTC")
    assert caught.value.path == str(path)


def test_naive_csv_times_in_business_zone(landing: Path) -> None:
    write_text(
        landing,
        "events.csv",
        csv_text("2024-03-05 10:00:00,u1,i1,view,,,,", "2024-03-05T10:00:00+00:00,u1,i1,view,,,,"),
    )
    times = read_increment(landing, DAY, BERLIN).frame["event_time"].tolist()
    assert times[0] == utc("2024-03-05 09:00")
    assert times[1] == utc("2024-03-05 10:00")


def test_naive_parquet_times_in_business_zone(landing: Path) -> None:
    frame = pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2024-07-05 10:00:00"]),
            "user_id": ["u1"],
            "item_id": ["i1"],
            "event_type": ["view"],
        }
    )
    frame.to_parquet(day_folder(landing) / "events.parquet", index=False)
    times = read_increment(landing, DAY, BERLIN).frame["event_time"].tolist()
    assert times == [utc("2024-07-05 08:00")]


def test_naive_time_in_dst_gap_names_row(landing: Path) -> None:
    # 02:30 does not exist in Berlin on 31 March 2024; offset rows before it must not shift the row number.
    day = date(2024, 3, 31)
    write_text(
        landing,
        "events.csv",
        csv_text("2024-03-31T10:00:00Z,u1,i1,view,,,,", "2024-03-31T11:00:00Z,u1,i1,view,,,,", "2024-03-31 02:30:00,u2,i2,view,,,,"),
        day,
    )
    with pytest.raises(IncrementError, match="row 4: event_time '2024-03-31 02:30:00' does not exist") as caught:
        read_increment(landing, day, BERLIN)
    assert caught.value.path.endswith("events.csv")


def test_unparseable_time_names_row(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,", "yesterday,u1,i1,view,,,,"))
    with pytest.raises(IncrementError, match="row 3: column event_time has unparseable or missing value 'yesterday'") as caught:
        read_increment(landing, DAY, "UTC")
    assert caught.value.path.endswith("events.csv")


def test_missing_time_names_row(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text(",u1,i1,view,,,,"))
    with pytest.raises(IncrementError, match="row 2: column event_time"):
        read_increment(landing, DAY, "UTC")


def test_missing_column_named(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,view", header="event_time,user_id,event_type"))
    with pytest.raises(IncrementError, match="missing required column\\(s\\) item_id") as caught:
        read_increment(landing, DAY, "UTC")
    assert caught.value.path.endswith("events.csv")


def test_non_numeric_price_names_row_and_column(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,1,cheap,,"))
    with pytest.raises(IncrementError, match="row 2: column price has non-numeric value 'cheap'"):
        read_increment(landing, DAY, "UTC")


def test_non_numeric_quantity_in_jsonl(landing: Path) -> None:
    write_text(
        landing,
        "events.jsonl",
        '{"event_time": "2024-03-05T10:00:00Z", "user_id": "u1", "item_id": "i1", "event_type": "view"}\n'
        '{"event_time": "2024-03-05T10:00:00Z", "user_id": "u1", "item_id": "i1", "event_type": "view", "quantity": "two"}\n',
    )
    with pytest.raises(IncrementError, match="row 2: column quantity has non-numeric value 'two'"):
        read_increment(landing, DAY, "UTC")


def test_empty_item_id_names_row(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,", "2024-03-05T10:00:00Z,u1,,view,,,,"))
    with pytest.raises(IncrementError, match="row 3: column item_id is empty"):
        read_increment(landing, DAY, "UTC")


def test_fractional_id_names_row(landing: Path) -> None:
    write_text(
        landing,
        "events.jsonl",
        '{"event_time": "2024-03-05T10:00:00Z", "user_id": 7.5, "item_id": "i1", "event_type": "view"}\n',
    )
    with pytest.raises(IncrementError, match="row 1: column user_id holds non-integral number"):
        read_increment(landing, DAY, "UTC")


def test_corrupt_parquet_names_file(landing: Path) -> None:
    path = day_folder(landing) / "events.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(IncrementError, match="cannot read the file as parquet") as caught:
        read_increment(landing, DAY, "UTC")
    assert caught.value.path == str(path)


def test_missing_day_raises(landing: Path) -> None:
    with pytest.raises(MissingIncrementError, match="no increment for 2024-03-05"):
        read_increment(landing, DAY, "UTC")


def test_files_concatenated_in_name_order(landing: Path) -> None:
    write_text(landing, "b.csv", csv_text("2024-03-05T11:00:00Z,u2,i2,view,,,,"))
    write_text(landing, "a.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,", "2024-03-05T10:05:00Z,u1,i3,view,,,,"))
    increment = read_increment(landing, DAY, "UTC")
    assert [path.name for path in increment.files] == ["a.csv", "b.csv"]
    assert increment.frame["item_id"].tolist() == ["i1", "i3", "i2"]
    assert increment.file_rows == (2, 1)


def test_ignored_files_skipped(landing: Path) -> None:
    write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,"))
    write_text(landing, ".events.csv.tmp", "partial")
    write_text(landing, "_SUCCESS", "")
    write_text(landing, "README.txt", "notes")
    assert [path.name for path in increment_files(landing, DAY)] == ["events.csv"]


def test_locate_row_maps_to_file_line() -> None:
    increment = Increment(
        day=DAY,
        frame=pd.DataFrame({"x": range(5)}),
        files=(Path("a.csv"), Path("b.parquet")),
        data_version="v",
        file_rows=(2, 3),
    )
    assert locate_row(increment, 0) == ("a.csv", 2)
    assert locate_row(increment, 1) == ("a.csv", 3)
    assert locate_row(increment, 2) == ("b.parquet", 1)
    assert locate_row(increment, 4) == ("b.parquet", 3)


def test_locate_row_without_counts_lists_files() -> None:
    increment = Increment(day=DAY, frame=pd.DataFrame({"x": range(3)}), files=(Path("a.csv"), Path("b.csv")), data_version="v")
    assert locate_row(increment, 2) == ("a.csv, b.csv", 3)


def test_data_version_ignores_name(landing: Path) -> None:
    path = write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,"))
    before = read_increment(landing, DAY, "UTC").data_version
    path.rename(path.with_name("renamed.csv"))
    assert read_increment(landing, DAY, "UTC").data_version == before


def test_data_version_ignores_mtime(landing: Path) -> None:
    path = write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,"))
    before = read_increment(landing, DAY, "UTC").data_version
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert read_increment(landing, DAY, "UTC").data_version == before


def test_data_version_ignores_file_order(tmp_path: Path) -> None:
    first = tmp_path / "x" / "a.csv"
    second = tmp_path / "x" / "b.csv"
    swapped_first = tmp_path / "y" / "a.csv"
    swapped_second = tmp_path / "y" / "b.csv"
    for path in (first, second, swapped_first, swapped_second):
        path.parent.mkdir(exist_ok=True)
    first.write_text("one")
    second.write_text("two")
    swapped_first.write_text("two")
    swapped_second.write_text("one")
    assert data_version([first, second]) == data_version([swapped_first, swapped_second])


def test_data_version_tracks_content(landing: Path) -> None:
    path = write_text(landing, "events.csv", csv_text("2024-03-05T10:00:00Z,u1,i1,view,,,,"))
    before = read_increment(landing, DAY, "UTC").data_version
    path.write_text(csv_text("2024-03-05T10:00:00Z,u1,i1,purchase,,,,"))
    assert read_increment(landing, DAY, "UTC").data_version != before


def test_landed_days_sorted_and_filtered(landing: Path) -> None:
    for day in (date(2024, 3, 7), date(2024, 3, 5)):
        write_text(landing, "events.csv", "x", day)
    day_folder(landing, date(2024, 3, 6))
    write_text(landing, "_SUCCESS", "", date(2024, 3, 8))
    (landing / "notes").mkdir()
    (landing / "notes" / "events.csv").write_text("x")
    assert landed_days(landing) == [date(2024, 3, 5), date(2024, 3, 7)]


def test_ignored_landing_entries_named(landing: Path) -> None:
    write_text(landing, "events.csv", "x", DAY)
    write_text(landing, "events.csv.gz", "x", DAY)
    write_text(landing, "notes.txt", "x", DAY)
    write_text(landing, "_SUCCESS", "", DAY)
    write_text(landing, ".events.csv.swp", "", DAY)
    (landing / DAY.isoformat() / "sub").mkdir()
    for name in ("2024-1-13", "2024-02-30"):
        (landing / name).mkdir()
        (landing / name / "events.csv").write_text("x")
    (landing / "events.csv").write_text("x")
    messages = ignored_landing_entries(landing)
    named = sorted(message.split(":")[0].removeprefix(f"{landing}/") for message in messages)
    assert named == ["2024-02-30", "2024-03-05/events.csv.gz", "2024-03-05/notes.txt", "2024-03-05/sub", "2024-1-13", "events.csv"]
    assert landed_days(landing) == [DAY]


def test_landed_days_without_landing(tmp_path: Path) -> None:
    assert landed_days(tmp_path / "absent") == []


def test_parse_day_rejects_other_format() -> None:
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_day("05/03/2024")


def test_day_bounds_on_dst_day() -> None:
    start, end = day_bounds(date(2024, 3, 31), ZoneInfo(BERLIN))
    assert start == utc("2024-03-30 23:00")
    assert end - start == timedelta(hours=23)
