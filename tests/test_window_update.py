"""User x item and user x category partitions built from the day before equal the full aggregation over the window."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pandas as pd
import pytest

from freshrank.config import FeatureConfig, load_settings, save_settings
from freshrank.features import _VIEW_SQL, feature_timestamp, partition_path, write_feature_partition
from freshrank.importers.landing import write_day
from freshrank.staging import load_staged, stage_increment
from freshrank.synthetic import ShopSpec, generate_day
from freshrank.warehouse import connect, publish_increment
from freshrank.window_update import CATEGORY_VIEW, VIEW, update_sql, user_category_update_sql, user_item_update_sql

SHOP = ShopSpec(days=12, users=150, items=40, seed=11, events_per_day=1500)
WINDOW = 4
"""A short window, so days leave it and their counts are subtracted during the replay."""
KEYS = {VIEW: ["user_id", "item_id"], CATEGORY_VIEW: ["user_id", "category"]}


def _with_uncategorized(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the category of every fifth item's events: their purchases count in a user's total only."""
    numbers = frame["item_id"].str.extract(r"(\d+)$", expand=False).astype(int)
    return frame.assign(category=frame["category"].where(numbers % 5 != 0))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Events of the shop in the warehouse and both views' partitions computed day after day."""
    settings = load_settings(tmp_path_factory.mktemp("window") / "home")
    config = FeatureConfig(user_item_window_days=WINDOW)
    save_settings(settings.model_copy(update={"features": config}))
    settings = load_settings(settings.home)
    for index in range(SHOP.days):
        day = SHOP.day(index)
        write_day(settings.landing_dir, day.isoformat(), _with_uncategorized(generate_day(SHOP, index)))
        stage_increment(settings, day)
        publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
        for view in KEYS:
            write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, config, settings.zone)
    return settings


def _query(settings, sql: str, day, view: str = VIEW) -> pd.DataFrame:
    with connect(settings.warehouse_path, read_only=True) as con:
        frame = con.execute(sql, {"as_of": feature_timestamp(day, settings.zone)}).df()
    return frame.sort_values(KEYS[view], ignore_index=True)


@pytest.mark.parametrize("view", list(KEYS))
@pytest.mark.parametrize("index", range(1, SHOP.days))
def test_update_equals_full_query(chain, view, index):
    day = SHOP.day(index)
    previous = partition_path(chain.offline_dir, view, day - timedelta(days=1))
    update = update_sql(view, day, chain.features, previous, chain.zone)
    assert update is not None
    full = _query(chain, _VIEW_SQL[view](day, chain.features), day, view)
    assert len(full) > 0
    pd.testing.assert_frame_equal(_query(chain, update, day, view), full)


@pytest.mark.parametrize("view", list(KEYS))
def test_written_partition_equals_full_query(chain, view):
    # Past the window, so the stored chain has subtracted days that left it.
    day = SHOP.day(SHOP.days - 1)
    recency = "ui_last_event_epoch_us" if view == VIEW else "uc_last_event_epoch_us"
    stored = pd.read_parquet(partition_path(chain.offline_dir, view, day))
    stored = stored[stored[recency].notna()].drop(columns="created_timestamp")
    full = _query(chain, _VIEW_SQL[view](day, chain.features), day, view)
    pd.testing.assert_frame_equal(stored.sort_values(KEYS[view], ignore_index=True), full, check_dtype=False)


def test_share_counts_uncategorized_purchases(chain):
    # Some users bought uncategorized items: their category shares sum to less than one.
    day = SHOP.day(SHOP.days - 1)
    stored = pd.read_parquet(partition_path(chain.offline_dir, CATEGORY_VIEW, day))
    shares = stored.groupby("user_id")[f"uc_purchase_share_{WINDOW}d"].sum(min_count=1).dropna()
    assert (shares < 1 - 1e-9).any()
    assert (shares.round(9) <= 1).all()


def test_pairs_leave_after_window(chain):
    # A pair with events only on the first day is gone once that day leaves the window.
    first = SHOP.day(0)
    with connect(chain.warehouse_path, read_only=True) as con:
        only_first = con.execute(
            "SELECT user_id, item_id FROM events WHERE user_id IS NOT NULL GROUP BY ALL HAVING max(event_day) = ?", [first]
        ).fetchall()
    assert only_first
    stored = pd.read_parquet(partition_path(chain.offline_dir, VIEW, first + timedelta(days=WINDOW)))
    values = stored[stored["ui_last_event_epoch_us"].notna()]
    stored_pairs = set(zip(values["user_id"], values["item_id"]))
    assert stored_pairs.isdisjoint(only_first)


def test_other_columns_fall_back(chain, tmp_path):
    day = SHOP.day(3)
    previous = partition_path(chain.offline_dir, VIEW, day - timedelta(days=1))
    changed = tmp_path / "previous.parquet"
    duckdb.sql(f"COPY (SELECT * EXCLUDE (ui_carts_{WINDOW}d) FROM read_parquet('{previous}')) TO '{changed}' (FORMAT parquet)")
    assert user_item_update_sql(day, chain.features, changed) is None
    assert user_item_update_sql(day, FeatureConfig(user_item_window_days=WINDOW + 1), previous) is None
    categories = partition_path(chain.offline_dir, CATEGORY_VIEW, day - timedelta(days=1))
    other_window = FeatureConfig(user_item_window_days=WINDOW + 1)
    assert user_category_update_sql(day, other_window, categories, chain.zone) is None
