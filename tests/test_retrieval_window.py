"""Point-in-time joins over only the partitions the rows can see give what a join over all history gives."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.feature_store import day_start, feature_refs, historical_features, open_store, seen_feature_timestamps_us
from freshrank.features import FEATURE_VIEWS, partition_path, with_days_since
from freshrank.retrieval_window import item_categories_seen, needed_partitions
from freshrank.training_rows import label_rows

KEYS = ["user_id", "item_id"]


def _entity_rows(settings: Settings, day: date) -> pd.DataFrame:
    labels, _ = label_rows(settings, day)
    return labels.assign(event_timestamp=day_start(day, settings))


def _full_history_join(settings: Settings, rows: pd.DataFrame) -> pd.DataFrame:
    categories = item_categories_seen(settings, rows["event_timestamp"], rows["item_id"])
    keyed = rows.assign(category=categories)
    joined = open_store(settings).get_historical_features(entity_df=keyed, features=feature_refs(settings)).to_df()
    return with_days_since(joined, seen_feature_timestamps_us(joined["event_timestamp"], settings))


def _assert_same_rows(windowed: pd.DataFrame, full: pd.DataFrame) -> None:
    left = windowed.sort_values(KEYS).reset_index(drop=True)
    right = full[windowed.columns].sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_windowed_join_equals_full_history(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    day = date(2024, 3, 10)
    rows = _entity_rows(settings, day)

    windowed = historical_features(settings, rows)

    assert len(windowed) == len(rows) > 0
    _assert_same_rows(windowed, _full_history_join(settings, rows))


def test_item_category_of_day_before(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    rows = _entity_rows(settings, date(2024, 3, 10))

    categories = item_categories_seen(settings, rows["event_timestamp"], rows["item_id"])

    # i3's first event is on 10 March itself, so the item features of 9 March do not know it.
    assert dict(zip(rows["item_id"], categories)) == {"i1": "A", "i2": "B", "i3": None}


def test_user_category_features_join_by_item_category(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    rows = _entity_rows(settings, date(2024, 3, 10))

    joined = historical_features(settings, rows).set_index(KEYS)

    assert "category" not in joined.columns
    # By 9 March u2 had viewed category B once (i2 on 1 March) and u1 had viewed and bought i1 of A.
    assert joined.loc[("u2", "i2"), "uc_views_90d"] == 1
    assert joined.loc[("u1", "i1"), "uc_views_90d"] == 1
    assert joined.loc[("u1", "i1"), "uc_purchases_90d"] == 1
    assert pd.isna(joined.loc[("u1", "i3"), "uc_views_90d"])


def test_reads_only_the_day_before(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    rows = _entity_rows(settings, date(2024, 3, 10))

    needed = needed_partitions(settings, rows["event_timestamp"])

    for view in FEATURE_VIEWS:
        assert needed[view] == [partition_path(settings.offline_dir, view, date(2024, 3, 9))]


def test_missing_day_reads_the_ttl_before(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    day = date(2024, 3, 10)
    for view in FEATURE_VIEWS:
        partition_path(settings.offline_dir, view, day - timedelta(days=1)).unlink()
    rows = _entity_rows(settings, day)

    needed = needed_partitions(settings, rows["event_timestamp"])
    windowed = historical_features(settings, rows)

    older = sorted(path for path in (settings.offline_dir / "user_features").glob("*.parquet") if path.stem < day.isoformat())
    assert needed["user_features"][-1] == older[-1]
    _assert_same_rows(windowed, _full_history_join(settings, rows))


def test_view_without_partitions_names_folder(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    for path in (settings.offline_dir / "item_features").glob("*.parquet"):
        path.unlink()
    rows = _entity_rows(settings, date(2024, 3, 10))

    with pytest.raises(FeatureStoreError, match="no item_features partition under"):
        needed_partitions(settings, rows["event_timestamp"])
