"""User x item partitions built from the day before equal the full aggregation over the window."""

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
from freshrank.window_update import VIEW, user_item_update_sql

SHOP = ShopSpec(days=12, users=150, items=40, seed=11, events_per_day=1500)
WINDOW = 4
"""A short window, so days leave it and their counts are subtracted during the replay."""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Events of the shop in the warehouse and the user x item partitions computed day after day."""
    settings = load_settings(tmp_path_factory.mktemp("window") / "home")
    config = FeatureConfig(user_item_window_days=WINDOW)
    save_settings(settings.model_copy(update={"features": config}))
    settings = load_settings(settings.home)
    for index in range(SHOP.days):
        day = SHOP.day(index)
        write_day(settings.landing_dir, day.isoformat(), generate_day(SHOP, index))
        stage_increment(settings, day)
        publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
        write_feature_partition(settings.warehouse_path, settings.offline_dir, VIEW, day, config, settings.zone)
    return settings


def _query(settings, sql: str, day) -> pd.DataFrame:
    with connect(settings.warehouse_path, read_only=True) as con:
        frame = con.execute(sql, {"as_of": feature_timestamp(day, settings.zone)}).df()
    return frame.sort_values(["user_id", "item_id"], ignore_index=True)


@pytest.mark.parametrize("index", range(1, SHOP.days))
def test_update_equals_full_query(chain, index):
    day = SHOP.day(index)
    previous = partition_path(chain.offline_dir, VIEW, day - timedelta(days=1))
    update = user_item_update_sql(day, chain.features, previous)
    assert update is not None
    full = _query(chain, _VIEW_SQL[VIEW](day, chain.features), day)
    assert len(full) > 0
    pd.testing.assert_frame_equal(_query(chain, update, day), full)


def test_written_partition_equals_full_query(chain):
    # Past the window, so the stored chain has subtracted days that left it.
    day = SHOP.day(SHOP.days - 1)
    stored = pd.read_parquet(partition_path(chain.offline_dir, VIEW, day))
    stored = stored[stored["ui_last_event_epoch_us"].notna()].drop(columns="created_timestamp")
    full = _query(chain, _VIEW_SQL[VIEW](day, chain.features), day)
    pd.testing.assert_frame_equal(stored.sort_values(["user_id", "item_id"], ignore_index=True), full, check_dtype=False)


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
