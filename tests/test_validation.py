"""Tests of the increment validation suite (freshrank.validation) with real Great Expectations runs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshrank.config import ValidationConfig
from freshrank.errors import ConfigError
from freshrank.schema import INCREMENT_COLUMNS
from freshrank.validation import (
    DERIVED_COLUMNS,
    ExpectationOutcome,
    ValidationResult,
    day_bounds_utc,
    validate_increment,
    write_validation_report,
)

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NEW_YORK = "America/New_York"
DST_START_DAY = date(2024, 3, 10)
"""Day on which New York moves to summer time: it lasts 23 hours."""
ROWS = 2000
CONFIG = ValidationConfig()


def make_increment(rows: int = ROWS, day: date = DST_START_DAY, timezone: str = NEW_YORK, seed: int = 0) -> pd.DataFrame:
    """Return a clean increment in the canonical schema with events spread over the local day."""
    rng = np.random.default_rng(seed)
    start, end = day_bounds_utc(day, timezone)
    seconds = int((end - start).total_seconds())
    event_time = start + pd.to_timedelta(np.sort(rng.integers(0, seconds, rows)), unit="s")
    return pd.DataFrame(
        {
            "event_time": event_time,
            "user_id": rng.integers(0, 300, rows).astype(str),
            "item_id": rng.integers(0, 900, rows).astype(str),
            "event_type": rng.choice(["view", "add_to_cart", "purchase"], rows, p=[0.8, 0.15, 0.05]),
            "quantity": rng.choice([1.0, 2.0, -1.0], rows, p=[0.8, 0.15, 0.05]),
            "price": np.round(rng.uniform(0.5, 90.0, rows), 2),
            "category": rng.choice(["toys", "books", "garden"], rows),
            "session_id": rng.integers(0, 800, rows).astype(str),
        }
    )


def run(frame: pd.DataFrame, trailing: list[int] | None = None, timezone: str = NEW_YORK) -> ValidationResult:
    trailing_counts = [len(frame)] * 5 if trailing is None else trailing
    return validate_increment(frame, DST_START_DAY, timezone, CONFIG, trailing_counts)


def failed_names(result: ValidationResult) -> set[str]:
    return {outcome.expectation for outcome in result.failed()}


def outcome(result: ValidationResult, name: str) -> ExpectationOutcome:
    return next(item for item in result.outcomes if item.expectation == name)


# --- Planted defects: each one fails exactly its expectation -----------------------------------


def null_item_id(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[3, 700], "item_id"] = None
    return frame


def unknown_event_type(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[5, "event_type"] = "click"
    return frame


def event_after_local_midnight(frame: pd.DataFrame) -> pd.DataFrame:
    # 00:30 on 2024-03-11 in New York is 04:30 UTC: inside a naive 24-hour window from
    # 05:00 UTC the day before, but outside the 23-hour local day.
    frame.loc[9, "event_time"] = pd.Timestamp("2024-03-11 00:30", tz=NEW_YORK).tz_convert("UTC")
    return frame


def event_before_local_midnight(frame: pd.DataFrame) -> pd.DataFrame:
    # 23:00 UTC on 2024-03-09 is still the 9th in New York (18:00 local).
    frame.loc[0, "event_time"] = pd.Timestamp("2024-03-09 23:00", tz="UTC")
    return frame


def negative_price(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[11, "price"] = -4.5
    return frame


def zero_quantity(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[12, "quantity"] = 0.0
    return frame


def thirty_percent_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    copies = frame.sample(n=int(len(frame) * 0.3 / 0.7), random_state=1)
    return pd.concat([frame, copies], ignore_index=True)


DEFECTS = {
    "item_id_not_null": null_item_id,
    "event_type_known": unknown_event_type,
    "event_time_within_day": event_after_local_midnight,
    "price_not_negative": negative_price,
    "quantity_not_zero": zero_quantity,
    "duplicate_share": thirty_percent_duplicates,
}


def test_clean_increment_passes():
    result = run(make_increment())
    assert result.success
    assert result.failed() == []
    assert result.row_count == ROWS
    assert not any(item.skipped for item in result.outcomes)
    assert len(result.outcomes) == 19


def test_validation_releases_the_frame():
    import gc

    from great_expectations.execution_engine.pandas_batch_data import PandasBatchData

    assert run(make_increment()).success
    gc.collect()
    cached = [data for data in gc.get_objects() if isinstance(data, PandasBatchData) and len(data.dataframe)]
    assert cached == []


@pytest.mark.parametrize("expected", sorted(DEFECTS))
def test_defect_fails_its_expectation(expected):
    frame = DEFECTS[expected](make_increment())
    result = run(frame)
    assert not result.success
    assert failed_names(result) == {expected}
    assert expected in result.to_markdown()
    assert outcome(result, expected).unexpected_examples


def test_event_before_day_start_fails():
    result = run(event_before_local_midnight(make_increment()))
    assert failed_names(result) == {"event_time_within_day"}
    examples = outcome(result, "event_time_within_day").unexpected_examples
    assert examples[0]["event_time"].startswith("2024-03-09T23:00:00")


def test_null_item_id_counts_and_examples():
    result = run(null_item_id(make_increment()))
    item = outcome(result, "item_id_not_null")
    assert item.observed == {"unexpected_rows": 2}
    assert item.threshold == {"max_null_rows": 0}
    assert [row["item_id"] for row in item.unexpected_examples] == [None, None]
    assert item.column == "item_id"


def test_unknown_event_type_names_value():
    result = run(unknown_event_type(make_increment()))
    item = outcome(result, "event_type_known")
    assert item.unexpected_examples[0]["event_type"] == "click"
    assert item.threshold == {"allowed_values": ["view", "add_to_cart", "purchase"]}
    assert "click" in result.to_markdown()


def test_duplicate_share_observed():
    frame = thirty_percent_duplicates(make_increment())
    item = outcome(run(frame), "duplicate_share")
    assert item.observed == pytest.approx(0.3, abs=0.001)
    assert item.threshold == CONFIG.max_duplicate_share
    assert len(item.unexpected_examples) == 5


def test_duplicates_under_threshold_pass():
    frame = make_increment()
    copies = frame.sample(n=int(len(frame) * 0.04), random_state=2)
    result = run(pd.concat([frame, copies], ignore_index=True))
    assert result.success
    assert outcome(result, "duplicate_share").observed == pytest.approx(0.04 / 1.04, abs=0.001)


def test_volume_ten_times_mean_fails():
    frame = make_increment()
    result = run(frame, trailing=[ROWS // 10] * 7)
    assert failed_names(result) == {"row_volume"}
    item = outcome(result, "row_volume")
    assert item.observed == {"row_count": ROWS, "ratio_to_trailing_mean": 10.0}
    assert item.threshold == {"min_row_count": 40, "max_row_count": 1000}
    assert "row_volume" in result.to_markdown()


def test_volume_too_low_fails():
    result = run(make_increment(rows=100), trailing=[ROWS] * 3)
    assert failed_names(result) == {"row_volume"}


def test_volume_uses_last_trailing_days():
    # The oldest counts lie outside the volume_trailing_days window and must be ignored.
    config = ValidationConfig(volume_trailing_days=3)
    frame = make_increment()
    result = validate_increment(frame, DST_START_DAY, NEW_YORK, config, [10, 10, ROWS, ROWS, ROWS])
    assert result.success
    assert outcome(result, "row_volume").observed["ratio_to_trailing_mean"] == 1.0


def test_volume_after_empty_trailing_days_fails():
    result = run(make_increment(), trailing=[0, 0, 0])
    assert failed_names(result) == {"row_volume"}
    assert outcome(result, "row_volume").observed == {"row_count": ROWS, "ratio_to_trailing_mean": None}
    json.dumps(result.to_dict(), allow_nan=False)


def test_volume_skipped_with_few_trailing_days():
    result = run(make_increment(), trailing=[10, 12])
    item = outcome(result, "row_volume")
    assert result.success
    assert item.success
    assert item.skipped
    assert "2 trailing daily row counts" in item.note
    assert "row_volume" in result.to_markdown()


def test_missing_column_fails_by_name():
    frame = make_increment().drop(columns=["item_id"])
    result = run(frame)
    assert failed_names(result) == {"required_columns_present"}
    item = outcome(result, "required_columns_present")
    assert item.observed == {"missing_columns": ["item_id"]}
    assert "item_id" in result.to_markdown()
    dependent = outcome(result, "item_id_not_null")
    assert dependent.skipped
    assert "'item_id' is absent" in dependent.note


def test_absent_optional_column_is_not_evaluated():
    result = run(make_increment().drop(columns=["price"]))
    assert result.success
    assert outcome(result, "price_not_negative").skipped


def test_naive_event_time_fails_with_hint():
    frame = make_increment()
    frame["event_time"] = frame["event_time"].dt.tz_localize(None)
    result = run(frame)
    assert failed_names(result) == {"event_time_within_day"}
    item = outcome(result, "event_time_within_day")
    assert item.observed == "datetime64[ns]"
    assert "tz-aware" in item.note


def test_null_prices_are_allowed():
    frame = make_increment()
    frame.loc[:20, "price"] = np.nan
    assert run(frame).success


def test_empty_increment_fails_volume_only():
    frame = make_increment().iloc[0:0]
    result = run(frame, trailing=[ROWS] * 3)
    assert failed_names(result) == {"row_volume"}
    assert outcome(result, "duplicate_share").skipped


def test_results_do_not_leak_between_calls():
    broken = run(negative_price(null_item_id(make_increment())))
    clean = run(make_increment(seed=3))
    assert failed_names(broken) == {"item_id_not_null", "price_not_negative"}
    assert clean.success
    assert clean.ge_result["statistics"]["evaluated_expectations"] == 19


def test_frame_is_not_modified():
    frame = make_increment()
    frame.index = frame.index + 1000
    before = frame.copy()
    run(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_example_rows_with_custom_index():
    frame = null_item_id(make_increment())
    frame.index = frame.index * 7 + 5
    examples = outcome(run(frame), "item_id_not_null").unexpected_examples
    assert [row["item_id"] for row in examples] == [None, None]


def test_unknown_timezone_raises():
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        run(make_increment(), timezone="Mars/Olympus")


def test_fingerprint_column_name_is_reserved():
    frame = make_increment()
    frame["_row_fingerprint"] = 1
    with pytest.raises(ValueError, match="_row_fingerprint"):
        run(frame)


def test_day_bounds_follow_dst():
    start, end = day_bounds_utc(date(2024, 3, 10), NEW_YORK)
    assert start == pd.Timestamp("2024-03-10 05:00", tz="UTC")
    assert end == pd.Timestamp("2024-03-11 04:00", tz="UTC")
    start, end = day_bounds_utc(date(2024, 11, 3), NEW_YORK)
    assert end - start == pd.Timedelta(hours=25)


def test_result_dict_is_json():
    result = run(zero_quantity(make_increment()))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["success"] is False
    assert data["day"] == "2024-03-10"
    assert data["ge_result"]["success"] is False
    assert [item["expectation"] for item in data["outcomes"] if not item["success"]] == ["quantity_not_zero"]


def test_reports_are_written(tmp_path):
    result = run(negative_price(make_increment()))
    paths = write_validation_report(result, tmp_path / "reports" / "2024-03-10")
    assert paths["json"].name == "validation.json"
    assert paths["markdown"].name == "validation.md"
    assert json.loads(paths["json"].read_text())["outcomes"][6]["expectation"] == "price_not_negative"
    markdown = paths["markdown"].read_text()
    assert "price_not_negative" in markdown
    assert "-4.5" in markdown
    assert sorted(item.name for item in paths["json"].parent.iterdir()) == ["validation.json", "validation.md"]


def test_suite_file_names_every_check():
    suite = json.loads((Path(__file__).resolve().parents[1] / "expectations" / "increment_suite.json").read_text())
    checks = [item["meta"]["check"] for item in suite["expectations"]]
    assert len(checks) == len(set(checks))
    columns = {item["kwargs"].get("column") for item in suite["expectations"]} - {None, *DERIVED_COLUMNS}
    assert columns <= set(INCREMENT_COLUMNS)


@pytest.mark.real_data
def test_uci_negative_prices_fail():
    """UCI Online Retail 2011-08-12 contains two 'Adjust bad debt' rows with negative prices."""
    path = DATA_DIR / "uci-online-retail" / "derived" / "online_retail.parquet"
    if not path.exists():
        pytest.skip(f"real dataset not found at {path}")
    raw = pd.read_parquet(path)
    days = raw["InvoiceDate"].dt.date
    frame = pd.DataFrame(
        {
            "event_time": raw["InvoiceDate"],
            "user_id": raw["CustomerID"].astype("string"),
            "item_id": raw["StockCode"],
            "event_type": "purchase",
            "quantity": raw["Quantity"].astype("float64"),
            "price": raw["UnitPrice"],
            "category": pd.NA,
            "session_id": raw["InvoiceNo"],
        }
    )
    day = date(2011, 8, 12)
    counts = frame.groupby(days).size()
    trailing = counts[counts.index < day].tail(7).tolist()
    increment = frame[days == day].reset_index(drop=True)
    result = validate_increment(increment, day, "UTC", CONFIG, trailing)
    assert failed_names(result) == {"price_not_negative"}
    examples = outcome(result, "price_not_negative").unexpected_examples
    assert sorted(row["session_id"] for row in examples) == ["A563186", "A563187"]
    assert outcome(result, "price_not_negative").observed == {"unexpected_rows": 2}
