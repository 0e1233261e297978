"""Tests of the daily feature partitions (freshrank.features), with values worked out by hand on the tiny shop."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest

from freshrank.config import Settings
from freshrank.features import (
    ATTRIBUTE_COLUMNS,
    ENTITY_KEYS,
    FEATURE_VIEWS,
    RECENCY_FEATURES,
    TIMESTAMP_COLUMNS,
    epoch_us,
    feature_columns,
    feature_timestamp,
    model_feature_columns,
    partition_path,
    with_days_since,
    write_feature_partition,
)

DAY = date(2024, 3, 10)
EXPIRY_DAY = date(2024, 3, 9)
"""First day whose 28-day window (11 Feb .. 9 Mar) no longer contains u3's and i4's only event."""
SECONDS_PER_DAY = 86400.0


def days(seconds: float) -> float:
    return seconds / SECONDS_PER_DAY


# The features of DAY, worked out from the tiny shop's events (see tests/conftest.py). Recency
# counts from 23:59:59 UTC on 10 March.
USER_EXPECTED: dict[str, dict[str, float | None]] = {
    "u1": {
        "u_views_1d": 2, "u_carts_1d": 0, "u_purchases_1d": 1,
        "u_views_7d": 3, "u_carts_7d": 0, "u_purchases_7d": 1,
        "u_views_28d": 4, "u_carts_28d": 0, "u_purchases_28d": 2,
        "u_revenue_28d": 2 * 10.0 + 20.0,
        "u_view_conversion_28d": 2 / 4,
        "u_distinct_items_28d": 3,
        "u_active_days_28d": 3,
        "u_avg_price_28d": (10 + 10 + 5 + 10 + 20 + 20) / 6,
        "u_days_since_last_event": days(5 * 3600 + 59 * 60 + 59),
        "u_days_since_last_purchase": days(5 * 3600 + 59 * 60 + 59),
        "u_top_category_share_28d": 5 / 6,
    },
    "u2": {
        "u_views_1d": 1, "u_carts_1d": 0, "u_purchases_1d": 0,
        "u_views_7d": 2, "u_carts_7d": 1, "u_purchases_7d": 1,
        "u_views_28d": 3, "u_carts_28d": 1, "u_purchases_28d": 1,
        "u_revenue_28d": 10.0,
        "u_view_conversion_28d": 1 / 3,
        "u_distinct_items_28d": 2,
        "u_active_days_28d": 3,
        "u_avg_price_28d": (5 + 10 + 10 + 10 + 5) / 5,
        "u_days_since_last_event": days(3 * 3600 + 59 * 60 + 59),
        "u_days_since_last_purchase": days(5 * 86400 + 15 * 3600 + 39 * 60 + 59),
        "u_top_category_share_28d": 3 / 5,
    },
}

ITEM_EXPECTED: dict[str, dict[str, float | None]] = {
    "i1": {
        "i_views_1d": 1, "i_purchases_1d": 0,
        "i_views_7d": 2, "i_carts_7d": 1, "i_purchases_7d": 1,
        "i_views_28d": 3, "i_carts_28d": 1, "i_purchases_28d": 2,
        "i_distinct_users_7d": 2,
        "i_distinct_users_28d": 2,
        "i_revenue_28d": 2 * 10.0 + 10.0,
        "i_view_conversion_28d": 2 / 3,
        "i_price": 10.0,
        "i_days_since_last_event": days(17 * 3600 + 59 * 60 + 59),
        "i_days_since_last_purchase": days(5 * 86400 + 15 * 3600 + 39 * 60 + 59),
        "i_purchase_trend": 1 * (28 / 7) / 2,
    },
    # i2's view without a user on 5 March counts for the item.
    "i2": {
        "i_views_1d": 1, "i_views_7d": 3, "i_views_28d": 4, "i_purchases_28d": 0,
        "i_distinct_users_7d": 2,
        "i_revenue_28d": 0.0,
        "i_view_conversion_28d": 0.0,
        "i_price": 5.0,
        "i_days_since_last_purchase": None,
        "i_purchase_trend": None,
    },
    "i3": {
        "i_views_1d": 1, "i_purchases_1d": 1, "i_purchases_28d": 1,
        "i_revenue_28d": 20.0,
        "i_view_conversion_28d": 1.0,
        "i_purchase_trend": 1 * (28 / 7) / 1,
    },
}

USER_ITEM_EXPECTED: dict[tuple[str, str], dict[str, float | None]] = {
    ("u1", "i1"): {
        "ui_views_90d": 2, "ui_carts_90d": 0, "ui_purchases_90d": 1, "ui_purchase_days_90d": 1,
        "ui_days_since_last_event": days(17 * 3600 + 59 * 60 + 59),
        "ui_days_since_last_purchase": days(9 * 86400 + 13 * 3600 + 29 * 60 + 59),
    },
    ("u1", "i3"): {
        "ui_views_90d": 1, "ui_purchases_90d": 1,
        "ui_days_since_last_purchase": days(5 * 3600 + 59 * 60 + 59),
    },
    ("u1", "i2"): {"ui_views_90d": 1, "ui_purchases_90d": 0, "ui_days_since_last_purchase": None},
    ("u2", "i1"): {"ui_views_90d": 1, "ui_carts_90d": 1, "ui_purchases_90d": 1},
    ("u2", "i2"): {"ui_views_90d": 2, "ui_purchases_90d": 0},
    # The 90-day window still contains u3's view of 10 February.
    ("u3", "i4"): {"ui_views_90d": 1, "ui_purchases_90d": 0},
}

USER_CATEGORY_EXPECTED: dict[tuple[str, str], dict[str, float | None]] = {
    # Category A contains i1 and i3: u1 viewed them 3 times and bought them twice, of 2 purchases.
    ("u1", "A"): {
        "uc_views_90d": 3, "uc_purchases_90d": 2, "uc_purchase_share_90d": 1.0,
        "uc_days_since_last_event": days(5 * 3600 + 59 * 60 + 59),
    },
    ("u1", "B"): {"uc_views_90d": 1, "uc_purchases_90d": 0, "uc_purchase_share_90d": 0.0},
    ("u2", "A"): {"uc_views_90d": 1, "uc_purchases_90d": 1, "uc_purchase_share_90d": 1.0},
    # u2 bought one item, none of category B.
    ("u2", "B"): {
        "uc_views_90d": 2, "uc_purchases_90d": 0, "uc_purchase_share_90d": 0.0,
        "uc_days_since_last_event": days(3 * 3600 + 59 * 60 + 59),
    },
    # u3 never bought anything, so its share is undefined.
    ("u3", "C"): {"uc_views_90d": 1, "uc_purchases_90d": 0, "uc_purchase_share_90d": None},
}


def read_partition(settings: Settings, view: str, day: date) -> pd.DataFrame:
    return pd.read_parquet(partition_path(settings.offline_dir, view, day))


def read_model_features(settings: Settings, view: str, day: date) -> pd.DataFrame:
    """Read a partition with the model's days-since features, counted to the day's feature timestamp."""
    return with_days_since(read_partition(settings, view, day), epoch_us(feature_timestamp(day, settings.zone)))


def check_values(frame: pd.DataFrame, expected: dict[str, float | None], where: str) -> None:
    assert len(frame) == 1, where
    row = frame.iloc[0]
    for column, value in expected.items():
        if value is None:
            assert pd.isna(row[column]), f"{where} {column}"
        else:
            assert row[column] == pytest.approx(value), f"{where} {column}"


@pytest.fixture(scope="module")
def home(tmp_path_factory, core_home_builder, core_shop) -> Settings:
    """The tiny shop with features of 10 February and 1 .. 10 March, shared by read-only tests."""
    feature_days = (date(2024, 2, 10),) + tuple(date(2024, 3, day) for day in range(1, 11))
    return core_home_builder(tmp_path_factory.mktemp("features") / "home", core_shop(), feature_days)


@pytest.mark.parametrize("user", sorted(USER_EXPECTED))
def test_user_features_by_hand(home: Settings, user: str) -> None:
    frame = read_model_features(home, "user_features", DAY)
    check_values(frame[frame["user_id"] == user], USER_EXPECTED[user], user)


@pytest.mark.parametrize("item", sorted(ITEM_EXPECTED))
def test_item_features_by_hand(home: Settings, item: str) -> None:
    frame = read_model_features(home, "item_features", DAY)
    check_values(frame[frame["item_id"] == item], ITEM_EXPECTED[item], item)


@pytest.mark.parametrize("key", sorted(USER_CATEGORY_EXPECTED))
def test_user_category_features_by_hand(home: Settings, key: tuple[str, str]) -> None:
    frame = read_model_features(home, "user_category_features", DAY)
    match = frame[(frame["user_id"] == key[0]) & (frame["category"] == key[1])]
    check_values(match, USER_CATEGORY_EXPECTED[key], str(key))


def test_user_category_row_keys(home: Settings) -> None:
    frame = read_partition(home, "user_category_features", DAY)
    assert sorted(zip(frame["user_id"], frame["category"])) == sorted(USER_CATEGORY_EXPECTED)


def test_item_category_not_a_feature(home: Settings) -> None:
    frame = read_partition(home, "item_features", DAY)
    assert dict(zip(frame["item_id"], frame["category"])) == {"i1": "A", "i2": "B", "i3": "A"}
    # i4's expiry row of 9 March has no category, so no user x category row is looked up for it.
    expired = read_partition(home, "item_features", EXPIRY_DAY).set_index("item_id")
    assert expired.loc["i4", "category"] is None
    assert "category" not in feature_columns("item_features", home.features)


@pytest.mark.parametrize("pair", sorted(USER_ITEM_EXPECTED))
def test_user_item_features_by_hand(home: Settings, pair: tuple[str, str]) -> None:
    frame = read_model_features(home, "user_item_features", DAY)
    match = frame[(frame["user_id"] == pair[0]) & (frame["item_id"] == pair[1])]
    check_values(match, USER_ITEM_EXPECTED[pair], str(pair))


def test_partition_entities(home: Settings) -> None:
    assert read_partition(home, "user_features", DAY)["user_id"].tolist() == ["u1", "u2"]
    assert read_partition(home, "item_features", DAY)["item_id"].tolist() == ["i1", "i2", "i3"]
    pairs = read_partition(home, "user_item_features", DAY)[["user_id", "item_id"]]
    assert list(pairs.itertuples(index=False, name=None)) == sorted(USER_ITEM_EXPECTED)


def test_rows_without_user_make_no_user_row(home: Settings) -> None:
    assert read_partition(home, "user_features", date(2024, 3, 5))["user_id"].notna().all()
    assert read_partition(home, "user_item_features", date(2024, 3, 5))["user_id"].notna().all()


def test_day_without_events_has_zero_counts(home: Settings) -> None:
    frame = read_model_features(home, "user_features", date(2024, 3, 6))
    u1 = frame[frame["user_id"] == "u1"].iloc[0]
    assert u1["u_views_1d"] == 0
    assert u1["u_views_7d"] == 2
    assert u1["u_days_since_last_event"] == pytest.approx(days(86400 + 14 * 3600 + 59 * 60 + 59))


def test_expiry_row_is_all_null(home: Settings) -> None:
    frame = read_partition(home, "user_features", EXPIRY_DAY)
    u3 = frame[frame["user_id"] == "u3"]
    assert len(u3) == 1
    for column in feature_columns("user_features", home.features):
        assert pd.isna(u3.iloc[0][column]), column


def test_expiry_row_has_day_timestamp(home: Settings) -> None:
    frame = read_partition(home, "item_features", EXPIRY_DAY)
    i4 = frame[frame["item_id"] == "i4"].iloc[0]
    assert i4["event_timestamp"] == pd.Timestamp("2024-03-09 23:59:59", tz="UTC")
    assert pd.isna(i4["i_views_28d"])


def test_entity_still_in_window_has_values(home: Settings) -> None:
    before = read_partition(home, "user_features", date(2024, 3, 8))
    u3 = before[before["user_id"] == "u3"].iloc[0]
    assert u3["u_views_28d"] == 1


def test_expiry_row_written_once(home: Settings) -> None:
    assert "u3" not in read_partition(home, "user_features", DAY)["user_id"].tolist()
    assert "i4" not in read_partition(home, "item_features", DAY)["item_id"].tolist()


def test_no_expiry_within_user_item_window(home: Settings) -> None:
    frame = read_partition(home, "user_item_features", EXPIRY_DAY)
    pair = frame[(frame["user_id"] == "u3") & (frame["item_id"] == "i4")].iloc[0]
    assert pair["ui_views_90d"] == 1


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_feature_columns_match_parquet(home: Settings, view: str) -> None:
    columns = read_partition(home, view, DAY).columns.tolist()
    attributes = ATTRIBUTE_COLUMNS.get(view, ())
    expected = list(ENTITY_KEYS[view]) + ["event_timestamp"] + feature_columns(view, home.features) + ["created_timestamp"]
    assert [column for column in columns if column not in attributes] == expected
    assert set(attributes) <= set(columns)


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_expiry_partition_keeps_schema(home: Settings, view: str) -> None:
    assert read_partition(home, view, EXPIRY_DAY).columns.tolist() == read_partition(home, view, DAY).columns.tolist()


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_features_are_float64(home: Settings, view: str) -> None:
    frame = read_partition(home, view, DAY)
    for column in feature_columns(view, home.features):
        assert str(frame[column].dtype) == "float64", column


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_partition_timestamps(home: Settings, view: str) -> None:
    frame = read_partition(home, view, DAY)
    for column in TIMESTAMP_COLUMNS:
        assert set(frame[column]) == {pd.Timestamp("2024-03-10 23:59:59", tz="UTC")}, column


def test_feature_timestamp_in_business_zone() -> None:
    # Berlin moves to summer time on 31 March 2024, so that day ends at 22:00 UTC.
    assert feature_timestamp(date(2024, 3, 31), ZoneInfo("Europe/Berlin")) == pd.Timestamp("2024-03-31 21:59:59", tz="UTC")
    assert feature_timestamp(date(2024, 3, 30), ZoneInfo("Europe/Berlin")) == pd.Timestamp("2024-03-30 22:59:59", tz="UTC")


def test_recency_stored_as_last_event_time(home: Settings) -> None:
    # u1's last event before the end of 10 March is the purchase of i3 at 18:00 UTC.
    u1 = read_partition(home, "user_features", DAY).set_index("user_id").loc["u1"]
    assert u1["u_last_event_epoch_us"] == epoch_us(pd.Timestamp("2024-03-10 18:00", tz="UTC"))
    assert u1["u_last_purchase_epoch_us"] == epoch_us(pd.Timestamp("2024-03-10 18:00", tz="UTC"))
    # The stored time stays put on a day without events; only the derived days grow.
    later = read_partition(home, "user_features", date(2024, 3, 6)).set_index("user_id").loc["u1"]
    earlier = read_partition(home, "user_features", date(2024, 3, 5)).set_index("user_id").loc["u1"]
    assert later["u_last_event_epoch_us"] == earlier["u_last_event_epoch_us"]


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_model_columns_rename_recency_in_place(home: Settings, view: str) -> None:
    stored = feature_columns(view, home.features)
    model = model_feature_columns(view, home.features)
    assert len(model) == len(stored)
    for stored_name, model_name in zip(stored, model):
        assert model_name == RECENCY_FEATURES[view].get(stored_name, stored_name)
    assert sorted(set(stored) - set(model)) == sorted(RECENCY_FEATURES[view])


def test_days_since_equals_sql_interval_epoch() -> None:
    # The derivation must give the same doubles as DuckDB's epoch(as_of - last_event) / 86400,
    # the definition before recency was stored as a time, sub-second times included.
    as_of = pd.Timestamp("2024-03-10 23:59:59", tz="UTC")
    times = [as_of - pd.Timedelta(microseconds=m) for m in (0, 1, 499_999, 86_400_000_000, 2_592_061_234_567, 7_775_999_999_999)]
    times.append(as_of + pd.Timedelta(milliseconds=500))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    expected = [
        con.execute("SELECT epoch($as_of::TIMESTAMPTZ - $t::TIMESTAMPTZ) / 86400.0", {"as_of": as_of, "t": t}).fetchone()[0]
        for t in times
    ]
    stored = pd.DataFrame({"u_last_event_epoch_us": [epoch_us(t) for t in times]})
    derived = with_days_since(stored, epoch_us(as_of))["u_days_since_last_event"].tolist()
    assert derived == expected


def test_feature_columns_follow_windows(home: Settings) -> None:
    config = home.features.model_copy(update={"windows_days": (3, 14)})
    columns = feature_columns("user_features", config)
    assert "u_views_3d" in columns
    assert "u_revenue_14d" in columns
    assert "u_views_28d" not in columns


def test_written_rows_reported(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    written = write_feature_partition(
        settings.warehouse_path, settings.offline_dir, "user_features", DAY, settings.features, settings.zone
    )
    assert written.rows == 2
    assert written.path == partition_path(settings.offline_dir, "user_features", DAY)


def test_rewrite_is_identical(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    before = read_partition(settings, "user_item_features", DAY)
    write_feature_partition(
        settings.warehouse_path, settings.offline_dir, "user_item_features", DAY, settings.features, settings.zone
    )
    pd.testing.assert_frame_equal(read_partition(settings, "user_item_features", DAY), before)


def test_failed_write_keeps_old_file(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    target = partition_path(settings.offline_dir, "user_features", DAY)
    before = target.read_bytes()
    # The expiry step reads the previous partition; a corrupt one makes the query fail.
    partition_path(settings.offline_dir, "user_features", EXPIRY_DAY).write_bytes(b"not parquet")
    with pytest.raises(duckdb.InvalidInputException, match="Parquet"):
        write_feature_partition(
            settings.warehouse_path, settings.offline_dir, "user_features", DAY, settings.features, settings.zone
        )
    assert target.read_bytes() == before
    assert [path.name for path in target.parent.glob(".*")] == []


def test_no_temporary_files_left(core_tiny_home: Settings) -> None:
    for view in FEATURE_VIEWS:
        names = [path.name for path in (core_tiny_home.offline_dir / view).iterdir()]
        assert [name for name in names if not name.endswith(".parquet") or name.startswith(".")] == [], view


def test_first_partition_has_no_expiry(tmp_path: Path, core_home_builder, core_shop) -> None:
    settings = core_home_builder(tmp_path / "home", core_shop(), (DAY,))
    assert read_partition(settings, "user_features", DAY)["user_id"].tolist() == ["u1", "u2"]


def test_values_independent_of_row_order(tmp_path: Path, core_home_builder, core_event_row) -> None:
    """Float sums depend on the order of their terms: (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3).

    The same events published in two orders must give byte-equal partitions. An item seen in
    two categories at one instant takes the same one in both.
    """
    events = []
    for minute, price in enumerate((0.1, 0.2, 0.3, 0.7)):
        for event_type in ("view", "purchase"):
            row = core_event_row(f"2024-03-10 08:{minute:02d}", "u1", "i1", event_type)
            events.append({**row, "price": price})
    events.append({**core_event_row("2024-03-10 09:00", "u2", "i2", "view"), "category": "garden"})
    events.append({**core_event_row("2024-03-10 09:00", "u3", "i2", "view"), "category": "books"})
    frame = pd.DataFrame(events)
    homes = [
        core_home_builder(tmp_path / name, {DAY: ordered.reset_index(drop=True)}, (DAY,))
        for name, ordered in (("forward", frame), ("reversed", frame.iloc[::-1]))
    ]
    for view in ("user_features", "item_features"):
        forward, backward = (partition_path(home.offline_dir, view, DAY).read_bytes() for home in homes)
        assert forward == backward, view
    items = read_partition(homes[0], "item_features", DAY).set_index("item_id")
    assert items.loc["i2", "category"] == "garden"
    users = read_partition(homes[0], "user_features", DAY).set_index("user_id")
    assert users.loc["u1", "u_avg_price_28d"] == pytest.approx(1.3 / 4)


def test_home_path_with_quote(tmp_path: Path, core_home_builder, core_shop, core_feature_days) -> None:
    # Partition paths go into DuckDB queries as string literals.
    settings = core_home_builder(tmp_path / "shop's home", core_shop(), core_feature_days)
    for view in FEATURE_VIEWS:
        for day in core_feature_days:
            assert partition_path(settings.offline_dir, view, day).exists(), (view, day)
    assert read_partition(settings, "user_features", DAY)["user_id"].tolist() == ["u1", "u2"]
