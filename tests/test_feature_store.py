"""Tests of freshrank's Feast use (freshrank.feature_store) with a real Feast repo, DuckDB offline and SQLite online store."""

from __future__ import annotations

import math
import sqlite3
from datetime import date

import pandas as pd
import pytest

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.feature_store import (
    FEAST_PROJECT,
    day_start,
    expected_online_rows,
    feature_refs,
    historical_features,
    materialize_day,
    model_feature_names,
    offline_dir_has,
    online_features_for,
    open_store,
    probe_online,
    repo_config,
)
from freshrank.features import (
    ATTRIBUTE_COLUMNS,
    ENTITY_KEYS,
    FEATURE_VIEWS,
    RECENCY_FEATURES,
    epoch_us,
    feature_columns,
    feature_timestamp,
    model_feature_columns,
    partition_path,
    with_days_since,
    write_feature_partition,
)

DAY = date(2024, 3, 10)
PREVIOUS_DAY = date(2024, 3, 9)
"""The day before DAY; u3 and i4 have all-null expiry rows in its partitions."""
PAIRS = [("u1", "i1"), ("u1", "i3"), ("u2", "i2"), ("u3", "i4")]


def offline(settings: Settings, view: str, day: date) -> pd.DataFrame:
    return pd.read_parquet(partition_path(settings.offline_dir, view, day))


def same(online: object, expected: float) -> bool:
    """Compare an online value with an offline float, where NaN offline means no value online."""
    if math.isnan(expected):
        return online is None or (isinstance(online, float) and math.isnan(online))
    return online == expected


@pytest.fixture(scope="module")
def served(tmp_path_factory, core_home_builder, core_shop, core_feature_days) -> Settings:
    """The tiny shop with DAY materialized into the online store; tests here only read it."""
    settings = core_home_builder(tmp_path_factory.mktemp("feast") / "home", core_shop(), core_feature_days)
    materialize_day(settings, DAY, open_store(settings))
    return settings


def test_apply_registers_views(served: Settings) -> None:
    store = open_store(served)
    assert sorted(view.name for view in store.list_feature_views()) == sorted(FEATURE_VIEWS)
    assert sorted(entity.name for entity in store.list_entities()) == ["category", "item", "user"]
    assert [service.name for service in store.list_feature_services()] == ["ranking_v1"]
    assert store.project == FEAST_PROJECT


def test_feature_view_schema_matches_columns(served: Settings) -> None:
    store = open_store(served)
    for view in FEATURE_VIEWS:
        names = [field.name for field in store.get_feature_view(view).features]
        assert names == feature_columns(view, served.features), view


def test_refs_follow_view_columns(served: Settings) -> None:
    refs = feature_refs(served)
    expected = [f"{view}:{name}" for view in FEATURE_VIEWS for name in feature_columns(view, served.features)]
    assert refs == expected
    renames = {stored: model for view in FEATURE_VIEWS for stored, model in RECENCY_FEATURES[view].items()}
    stored_names = [ref.split(":", 1)[1] for ref in expected]
    assert model_feature_names(served) == [renames.get(name, name) for name in stored_names]
    assert "u_days_since_last_event" in model_feature_names(served)
    assert "u_last_event_epoch_us" not in model_feature_names(served)


def test_probe_finds_no_mismatch(served: Settings) -> None:
    result = probe_online(served, DAY)
    entities = sum(len(offline(served, view, DAY)) for view in FEATURE_VIEWS)
    values = sum(len(offline(served, view, DAY)) * len(feature_columns(view, served.features)) for view in FEATURE_VIEWS)
    assert result.mismatches == []
    assert result.matched
    assert result.entities == entities
    assert result.values == values


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_online_equals_offline(served: Settings, view: str) -> None:
    keys = list(ENTITY_KEYS[view])
    for record in offline(served, view, DAY).to_dict("records"):
        entity = {key: record[key] for key in keys}
        online = online_features_for(served, view, entity)
        for name in feature_columns(view, served.features):
            assert same(online[name], record[name]), f"{entity} {name}: online {online[name]}, offline {record[name]}"


def test_unknown_entity_reads_as_none(served: Settings) -> None:
    online = online_features_for(served, "user_features", {"user_id": "nobody"})
    assert online["u_views_28d"] is None


def test_materialize_returns_day_window(served: Settings) -> None:
    start, end = materialize_day(served, DAY)
    assert start == pd.Timestamp("2024-03-10 00:00", tz="UTC")
    assert end == pd.Timestamp("2024-03-11 00:00", tz="UTC")


def test_features_of_day_before(served: Settings) -> None:
    # Each label row of DAY, stamped at DAY's start, gets the partition of the day before.
    rows = pd.DataFrame({"user_id": [u for u, _ in PAIRS], "item_id": [i for _, i in PAIRS]})
    joined = historical_features(served, rows.assign(event_timestamp=day_start(DAY, served)))
    as_of = epoch_us(feature_timestamp(PREVIOUS_DAY, served.zone))
    # The user x category view is keyed by the item's category in the item features of the day before.
    item_categories = offline(served, "item_features", PREVIOUS_DAY)[["item_id", "category"]]
    keyed = rows.merge(item_categories, on="item_id", how="left")
    for view in FEATURE_VIEWS:
        keys = list(ENTITY_KEYS[view])
        partition = offline(served, view, PREVIOUS_DAY).drop(columns=list(ATTRIBUTE_COLUMNS.get(view, ())))
        expected = with_days_since(keyed.merge(partition, on=keys, how="left"), as_of)
        for name in model_feature_columns(view, served.features):
            merged = joined.merge(expected[["user_id", "item_id", name]], on=["user_id", "item_id"], suffixes=("", "_expected"))
            pd.testing.assert_series_equal(merged[name], merged[f"{name}_expected"], check_names=False, obj=f"{view}:{name}")


def test_features_of_day_never_seen_at_its_start(served: Settings) -> None:
    rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i3"], "event_timestamp": [day_start(DAY, served)]})
    joined = historical_features(served, rows).iloc[0]
    # DAY's own partition has u1 with 4 views in 28 days and i3 with one view; the day before has 2 and none.
    assert joined["u_views_28d"] == 2
    assert pd.isna(joined["i_views_28d"])
    assert pd.isna(joined["ui_views_90d"])


def test_features_of_day_seen_next_day(served: Settings) -> None:
    rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i3"], "event_timestamp": [day_start(date(2024, 3, 11), served)]})
    joined = historical_features(served, rows).iloc[0]
    assert joined["u_views_28d"] == 4
    assert joined["i_views_28d"] == 1
    assert joined["ui_views_90d"] == 1


def test_expired_entity_joins_as_null(served: Settings) -> None:
    # u3's last non-null row (5 March) is within the 28-day ttl; the expiry row of 9 March hides it.
    rows = pd.DataFrame({"user_id": ["u3"], "item_id": ["i4"], "event_timestamp": [day_start(DAY, served)]})
    joined = historical_features(served, rows).iloc[0]
    assert pd.isna(joined["u_views_28d"])
    assert pd.isna(joined["i_views_28d"])
    assert joined["ui_views_90d"] == 1


def test_empty_entity_rows_get_columns(served: Settings) -> None:
    rows = pd.DataFrame({"user_id": pd.Series(dtype="string"), "item_id": pd.Series(dtype="string"), "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]")})
    joined = historical_features(served, rows)
    assert joined.empty
    assert set(model_feature_names(served)) <= set(joined.columns)


def test_offline_dir_has(served: Settings) -> None:
    assert offline_dir_has(served, DAY)
    assert not offline_dir_has(served, date(2024, 3, 8))


def test_missing_partition_rejected(core_tiny_home: Settings) -> None:
    with pytest.raises(FeatureStoreError, match="no user_features partition for 2024-03-08"):
        materialize_day(core_tiny_home, date(2024, 3, 8))


def test_expired_entity_online_after_materialize(core_tiny_home: Settings) -> None:
    # An older day's window runs to the newest feature day, so the expiry row of u3 wins.
    settings = core_tiny_home
    materialize_day(settings, date(2024, 3, 5))
    assert online_features_for(settings, "user_features", {"user_id": "u3"})["u_views_28d"] is None
    assert probe_online(settings, date(2024, 3, 5)).matched


def test_newer_day_after_older_serves_newer(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    materialize_day(settings, PREVIOUS_DAY)
    materialize_day(settings, DAY)
    assert online_features_for(settings, "user_features", {"user_id": "u1"})["u_views_28d"] == 4
    assert probe_online(settings, DAY).matched


def test_older_day_after_newer_keeps_newer(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    materialize_day(settings, DAY)
    materialize_day(settings, PREVIOUS_DAY)
    assert online_features_for(settings, "user_features", {"user_id": "u1"})["u_views_28d"] == 4
    assert probe_online(settings, PREVIOUS_DAY).matched


def test_older_day_after_newer_rematerialized(core_tiny_home: Settings) -> None:
    # Materializing the newest day again restores its values, whatever was written in between.
    settings = core_tiny_home
    materialize_day(settings, DAY)
    materialize_day(settings, PREVIOUS_DAY)
    materialize_day(settings, DAY)
    assert probe_online(settings, DAY).matched


def test_probe_reports_changed_offline_values(core_tiny_home: Settings, core_publish, core_event_row) -> None:
    settings = core_tiny_home
    materialize_day(settings, DAY)
    extra = core_event_row("2024-03-10 21:00", "u2", "i2", "view")
    shop_day = pd.concat([pd.read_parquet(settings.landing_dir / DAY.isoformat() / "events.parquet"), pd.DataFrame([extra])])
    core_publish(settings, DAY, shop_day)
    write_feature_partition(settings.warehouse_path, settings.offline_dir, "user_features", DAY, settings.features, settings.zone)
    result = probe_online(settings, DAY)
    changed = {(m["view"], m["entity"]["user_id"], m["feature"]) for m in result.mismatches if m["view"] == "user_features"}
    assert ("user_features", "u2", "u_views_1d") in changed
    assert ("user_features", "u1", "u_views_1d") not in changed
    mismatch = next(m for m in result.mismatches if m["feature"] == "u_views_1d")
    assert mismatch["offline"] == 2.0
    assert mismatch["online"] == 1.0


def test_expected_rows_of_chosen_entities(core_tiny_home: Settings) -> None:
    # Two keys: filters on each key's values alone would also keep (u1, i2) and (u2, i1).
    settings = core_tiny_home
    every = expected_online_rows(settings, "user_item_features", date(2024, 3, 1), DAY)
    chosen = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"]})
    rows = expected_online_rows(settings, "user_item_features", date(2024, 3, 1), DAY, entities=chosen)
    expected = every.merge(chosen, on=["user_id", "item_id"]).sort_values(["user_id", "item_id"], ignore_index=True)
    assert set(zip(every["user_id"], every["item_id"])) >= {("u1", "i2"), ("u2", "i1")}
    pd.testing.assert_frame_equal(rows.sort_values(["user_id", "item_id"], ignore_index=True), expected)


def _entity_indexes(settings: Settings) -> dict[str, str]:
    """Return the SQL of each online table's ``*_ek`` index (Feast's index on entity_key alone)."""
    connection = sqlite3.connect(f"file:{settings.feast_dir / 'online.db'}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' AND name = tbl_name || '_ek'")
        return dict(rows.fetchall())
    finally:
        connection.close()


def test_entity_index_emptied(served: Settings) -> None:
    indexes = _entity_indexes(served)
    assert len(indexes) == len(FEATURE_VIEWS)
    assert all(sql.endswith("(entity_key) WHERE 0") for sql in indexes.values())
    table = next(iter(indexes))
    connection = sqlite3.connect(f"file:{served.feast_dir / 'online.db'}?mode=ro", uri=True)
    try:
        # The statement Feast's SqliteOnlineStore.online_read runs.
        plan = connection.execute(
            f'EXPLAIN QUERY PLAN SELECT entity_key, feature_name, value, event_ts FROM "{table}" WHERE entity_key IN (?, ?)',
            [b"a", b"b"],
        ).fetchall()
    finally:
        connection.close()
    assert "USING INDEX sqlite_autoindex" in plan[0][3]


def test_entity_index_survives_apply(core_tiny_home: Settings) -> None:
    from feast import FeatureStore

    from feature_repo.features import build_definitions

    settings = core_tiny_home
    materialize_day(settings, DAY, open_store(settings))
    # Feast creates its index with IF NOT EXISTS, so applying the definitions again keeps the empty one.
    FeatureStore(config=repo_config(settings), repo_path=str(settings.feast_dir)).apply(
        build_definitions(settings.offline_dir, settings.features)
    )
    assert all(sql.endswith("WHERE 0") for sql in _entity_indexes(settings).values())


def test_entity_index_setting_restores_full(core_tiny_home: Settings) -> None:
    settings = core_tiny_home
    materialize_day(settings, DAY, open_store(settings))
    online = settings.online_store.model_copy(update={"sqlite_entity_index": True})
    full = settings.model_copy(update={"online_store": online})
    materialize_day(full, DAY, open_store(full))
    indexes = _entity_indexes(settings)
    assert len(indexes) == len(FEATURE_VIEWS)
    assert not any("WHERE" in sql for sql in indexes.values())
    assert online_features_for(full, "user_features", {"user_id": "u1"})["u_views_28d"] == 4
