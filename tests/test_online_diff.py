"""Tests of the diff write of the online store (freshrank.feature_store.write_online) on the tiny shop.

A replay writes only the rows that changed since the day before. Afterwards the online store
must contain what full writes give, which is the newest offline row of every entity. The
tests read it through Feast and raw from the SQLite tables or Redis hashes.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import pyarrow as pa
import pyarrow.parquet as pq
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from freshrank.config import OnlineStoreConfig, Settings, load_settings, save_settings
from freshrank.feature_store import (
    OnlineWrite,
    expected_online_rows,
    full_write_first_day,
    open_store,
    plan_online_write,
    probe_online,
    write_online,
)
from freshrank.features import (
    ENTITY_KEYS,
    FEATURE_VIEWS,
    RECENCY_COLUMNS,
    epoch_us,
    feature_columns,
    feature_timestamp,
    view_window_days,
    write_feature_partition,
)
from freshrank.increments import day_bounds
from freshrank.online_watermark import clear_watermark, online_as_of_us, read_watermark
from freshrank import online_writer
from freshrank.training_rows import build_training_rows

FIRST_DAY = date(2024, 2, 10)
"""u3's only event (a view of i4); the replay then jumps to REPLAY_START."""
REPLAY_START = date(2024, 2, 28)
CORRECTED_DAY = date(2024, 3, 5)
SMALL_CHUNK = 2
NEWEST_DAY = date(2024, 3, 12)
REPLAY_DAYS = (FIRST_DAY,) + tuple(REPLAY_START + timedelta(days=n) for n in range((NEWEST_DAY - REPLAY_START).days + 1))


def write_features(settings: Settings, day: date) -> None:
    for view in FEATURE_VIEWS:
        write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone)


def replay(settings: Settings, core_publish, core_event_row) -> tuple[dict[str, OnlineWrite], dict]:
    """Replay the tiny shop day by day with a lost watermark and a corrected day.

    Returns each write by label, and for SQLite the raw online rows per view as they were
    after NEWEST_DAY, before the correction rewrote every row of the later days.
    """
    store = open_store(settings)
    writes: dict[str, OnlineWrite] = {}
    for day in REPLAY_DAYS:
        if day == date(2024, 3, 3):
            clear_watermark(store.config)
        write_features(settings, day)
        writes[day.isoformat()] = write_online(settings, day, store)
    before_correction = {}
    if settings.online_store.type == "sqlite":
        before_correction = {view: raw_sqlite_rows(settings, view) for view in FEATURE_VIEWS}
    # A late event corrects 5 March: its features and every later day's are recomputed and
    # written online oldest first, as the changed-partitions run does.
    extra = core_event_row("2024-03-05 22:00", "u2", "i3", "add_to_cart")
    events = pd.concat([pd.read_parquet(settings.landing_dir / CORRECTED_DAY.isoformat() / "events.parquet"), pd.DataFrame([extra])])
    core_publish(settings, CORRECTED_DAY, events)
    day = CORRECTED_DAY
    while day <= NEWEST_DAY:
        write_features(settings, day)
        writes[f"corrected {day.isoformat()}"] = write_online(settings, day, store)
        day += timedelta(days=1)
    # One more day after the correction: the store again reflects the day before exactly.
    next_day = NEWEST_DAY + timedelta(days=1)
    write_features(settings, next_day)
    writes[next_day.isoformat()] = write_online(settings, next_day, store)
    return writes, before_correction


def expected_rows(settings: Settings, view: str) -> pd.DataFrame:
    """Return what full writes leave online: the newest offline row of each entity over all partitions."""
    return expected_online_rows(settings, view, FIRST_DAY, NEWEST_DAY + timedelta(days=1))


def with_values(rows: pd.DataFrame, settings: Settings, view: str) -> pd.DataFrame:
    """Return the rows with at least one feature value; the writer deletes the entities of the others."""
    return rows[rows[feature_columns(view, settings.features)].notna().any(axis=1)]


def entity_key(view: str, record: dict) -> EntityKeyProto:
    keys = list(ENTITY_KEYS[view])
    return EntityKeyProto(join_keys=keys, entity_values=[ValueProto(string_val=str(record[key])) for key in keys])


def decode(blob: bytes | None) -> float:
    if blob is None:
        return float("nan")
    value = ValueProto.FromString(blob)
    return value.double_val if value.WhichOneof("val") == "double_val" else float("nan")


def raw_sqlite_rows(settings: Settings, view: str) -> dict[bytes, dict[str, tuple[float, int]]]:
    """Return entity key -> feature -> (value, event_ts) as stored in the SQLite online table."""
    store = open_store(settings)
    table = compute_table_id(store.config.project, store.get_feature_view(view), store.config.registry.enable_online_feature_view_versioning)
    connection = sqlite3.connect(settings.feast_dir / "online.db")
    try:
        rows = connection.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{table}"').fetchall()
    finally:
        connection.close()
    stored: dict[bytes, dict[str, tuple[float, int]]] = {}
    for key, name, blob, event_ts in rows:
        stored.setdefault(bytes(key), {})[name] = (decode(blob), int(event_ts))
    return stored


def assert_feast_reads_expected(settings: Settings) -> None:
    store = open_store(settings)
    for view in FEATURE_VIEWS:
        expected = expected_rows(settings, view)
        keys = list(ENTITY_KEYS[view])
        names = feature_columns(view, settings.features)
        online = store.get_online_features(
            features=[f"{view}:{name}" for name in names], entity_rows=expected[keys].to_dict("records")
        ).to_df()
        for name in names:
            actual = pd.to_numeric(online[name], errors="coerce").to_numpy(dtype="float64")
            np.testing.assert_array_equal(actual, expected[name].to_numpy(dtype="float64"), err_msg=f"{view}:{name}")


def nonnull_row_ages_days(settings: Settings, view: str, stored: dict, newest_day: date) -> list[float]:
    """Return, for each online row with values, its age at the feature timestamp of ``newest_day``, in days."""
    newest = feature_timestamp(newest_day, settings.zone).timestamp()
    ages = []
    for features in stored.values():
        value, event_ts = features[RECENCY_COLUMNS[view]]
        if not np.isnan(value):
            ages.append((newest - event_ts) / 86400)
    return ages


def small_buckets(settings: Settings) -> Settings:
    """Save ``settings`` with full writes in buckets of ``SMALL_CHUNK`` partition rows."""
    online = settings.online_store.model_copy(update={"full_write_bucket_rows": SMALL_CHUNK})
    save_settings(settings.model_copy(update={"online_store": online}))
    return load_settings(settings.home)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, core_home_builder, core_shop, core_publish, core_event_row) -> tuple[Settings, dict, dict]:
    """The tiny shop replayed into the SQLite online store with diff writes."""
    settings = small_buckets(core_home_builder(tmp_path_factory.mktemp("diff") / "home", core_shop(), ()))
    # Chunks and buckets of a few entities, so that every write spans several of them.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(online_writer, "_CHUNK_ROWS", SMALL_CHUNK)
        writes, before_correction = replay(settings, core_publish, core_event_row)
    return settings, writes, before_correction


def test_replay_modes(replayed) -> None:
    _, writes, _ = replayed
    assert writes["2024-02-10"].mode == "full"
    assert "no watermark" in writes["2024-02-10"].reason
    assert writes["2024-02-28"].mode == "full"
    assert "reflects 2024-02-10, not the day before 2024-02-28" in writes["2024-02-28"].reason
    assert writes["2024-02-29"].mode == "diff"
    assert writes["2024-03-03"].mode == "full"
    assert "no watermark" in writes["2024-03-03"].reason
    for day in ("2024-03-04", "2024-03-10", "2024-03-12"):
        assert writes[day].mode == "diff", day
    assert writes["corrected 2024-03-05"].mode == "full"
    assert "older than the newest feature day 2024-03-12" in writes["corrected 2024-03-05"].reason
    assert writes["corrected 2024-03-12"].mode == "full"
    assert "reflects 2024-03-12, not the day before" in writes["corrected 2024-03-12"].reason
    assert writes["2024-03-13"].mode == "diff"


def test_writes_span_several_chunks(replayed) -> None:
    _, writes, _ = replayed
    largest = max(max(write.rows.values()) for write in writes.values())
    assert largest > 2 * SMALL_CHUNK, largest


def test_diff_writes_fewer_rows(replayed) -> None:
    settings, writes, _ = replayed
    # 12 March has no events, but the windows still drop old events of some entities.
    partition_rows = sum(len(pd.read_parquet(settings.offline_dir / view / "2024-03-12.parquet")) for view in FEATURE_VIEWS)
    assert 0 < writes["2024-03-12"].total_rows < partition_rows


def test_diff_writes_changed_values_only(replayed) -> None:
    settings, writes, _ = replayed
    write = writes["2024-03-12"]
    every_value = sum(write.rows[view] * len(feature_columns(view, settings.features)) for view in FEATURE_VIEWS)
    assert 0 < sum(write.values.values()) < every_value


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_last_feature_row_carries_entity_timestamp(replayed, view: str) -> None:
    # Feast's SQLite store reports an entity's event timestamp from the row it reads last,
    # the feature that sorts last. A diff write always rewrites that row.
    settings, _, before_correction = replayed
    last = max(feature_columns(view, settings.features))
    for stored in (before_correction[view], raw_sqlite_rows(settings, view)):
        assert stored
        for key, features in stored.items():
            assert features[last][1] == max(event_ts for _, event_ts in features.values()), key


def test_values_left_alone_keep_their_timestamp(replayed) -> None:
    # Before the correction, the store had taken diff writes from 4 to 12 March.
    _, _, before_correction = replayed
    stamps = [{event_ts for _, event_ts in features.values()} for rows in before_correction.values() for features in rows.values()]
    assert any(len(entity_stamps) > 1 for entity_stamps in stamps)


def test_replay_reads_like_full_writes(replayed) -> None:
    settings, _, _ = replayed
    assert_feast_reads_expected(settings)


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_replay_raw_rows_like_full_writes(replayed, view: str) -> None:
    settings, _, _ = replayed
    stored = raw_sqlite_rows(settings, view)
    expected = with_values(expected_rows(settings, view), settings, view)
    version = open_store(settings).config.entity_key_serialization_version
    names = feature_columns(view, settings.features)
    assert len(stored) == len(expected)
    for record in expected.to_dict("records"):
        key = serialize_entity_key(entity_key(view, record), entity_key_serialization_version=version)
        assert sorted(stored[key]) == sorted(names), record
        for name in names:
            np.testing.assert_equal(stored[key][name][0], float(record[name]), err_msg=f"{record} {name}")


def test_entities_that_left_are_null_online(replayed) -> None:
    settings, _, _ = replayed
    store = open_store(settings)
    online = store.get_online_features(features=["user_features:u_views_28d"], entity_rows=[{"user_id": "u3"}]).to_dict()
    assert online["u_views_28d"] == [None]
    items = store.get_online_features(features=["item_features:i_views_28d"], entity_rows=[{"item_id": "i4"}]).to_dict()
    assert items["i_views_28d"] == [None]


def test_entities_that_left_are_deleted(replayed) -> None:
    settings, writes, _ = replayed
    version = open_store(settings).config.entity_key_serialization_version
    # u3 and i4 had their only events on 10 February, so both leave the 28-day windows on 9
    # March. The pair (u3, i4) and the row (u3, C) stay for their 90-day windows.
    assert writes["2024-03-09"].mode == "diff"
    assert writes["2024-03-09"].deleted == {
        "user_features": 1,
        "item_features": 1,
        "user_item_features": 0,
        "user_category_features": 0,
    }
    assert writes["2024-03-10"].deleted == dict.fromkeys(FEATURE_VIEWS, 0)
    for view, record in (("user_features", {"user_id": "u3"}), ("item_features", {"item_id": "i4"})):
        key = serialize_entity_key(entity_key(view, record), entity_key_serialization_version=version)
        assert key not in raw_sqlite_rows(settings, view), record
    pair = serialize_entity_key(entity_key("user_item_features", {"user_id": "u3", "item_id": "i4"}), entity_key_serialization_version=version)
    assert pair in raw_sqlite_rows(settings, "user_item_features")


@pytest.mark.parametrize("view", FEATURE_VIEWS)
def test_unchanged_rows_younger_than_ttl(replayed, view: str) -> None:
    # Diff writes leave unchanged rows with an older event timestamp. The last-event row of
    # an entity with values must still be younger than the view's ttl.
    settings, _, before_correction = replayed
    ttl_days = view_window_days(view, settings.features)
    before = nonnull_row_ages_days(settings, view, before_correction[view], NEWEST_DAY)
    after = nonnull_row_ages_days(settings, view, raw_sqlite_rows(settings, view), NEWEST_DAY + timedelta(days=1))
    assert before
    assert after
    assert max(before) < ttl_days
    assert max(after) < ttl_days
    if view == "user_item_features":
        # (u3, i4) was last written by the full write of 3 March; the diff writes left it alone.
        assert max(before) == 9


def test_watermark_names_newest_day(replayed) -> None:
    settings, _, _ = replayed
    watermark = read_watermark(open_store(settings).config)
    assert watermark is not None
    assert watermark.day == "2024-03-13"
    assert watermark.mode == "diff"
    assert set(watermark.partitions) == set(FEATURE_VIEWS)


def test_probe_after_diff_write(replayed) -> None:
    settings, _, _ = replayed
    assert probe_online(settings, NEWEST_DAY + timedelta(days=1)).matched


@pytest.fixture
def written_to_march_9(tmp_path: Path, core_home_builder, core_shop, core_feature_days) -> Settings:
    """The tiny shop with features up to 9 March written online; 10 March's features are computed, not yet online."""
    settings = core_home_builder(tmp_path / "home", core_shop(), tuple(day for day in core_feature_days if day < date(2024, 3, 10)))
    first = write_online(settings, date(2024, 3, 9), open_store(settings))
    assert first.mode == "full"
    write_features(settings, date(2024, 3, 10))
    return settings


def test_diff_row_count_by_hand(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    store = open_store(settings)
    write = write_online(settings, date(2024, 3, 10), store)
    assert write.mode == "diff"
    # Users: u1 and u2 have events on 10 March; u3's expiry row of 9 March is not repeated.
    assert write.rows["user_features"] == 2
    # Items: i1 and i2 have new views, i3 is new; i4's expiry row is not repeated.
    assert write.rows["item_features"] == 3
    # Pairs: (u1, i1) and (u2, i2) have new views and (u1, i3) is new. (u1, i2), (u2, i1)
    # and (u3, i4) keep their counts and times.
    assert write.rows["user_item_features"] == 3
    # User x category: (u1, A) and (u2, B) have new events. (u1, B) keeps a share of 0 of
    # u1's purchases, and (u2, A) and (u3, C) are untouched.
    assert write.rows["user_category_features"] == 2
    assert write.total_rows == 10


def test_full_write_deletes_expired(tmp_path: Path, core_home_builder, core_shop, core_feature_days) -> None:
    days = tuple(day for day in core_feature_days if day < date(2024, 3, 10))
    nulls_home = core_home_builder(tmp_path / "nulls", core_shop(), days)
    save_settings(nulls_home.model_copy(update={"online_store": nulls_home.online_store.model_copy(update={"delete_expired": False})}))
    nulls_home = load_settings(nulls_home.home)
    deleting_home = core_home_builder(tmp_path / "deleting", core_shop(), days)

    with_nulls = write_online(nulls_home, date(2024, 3, 9), open_store(nulls_home))
    without = write_online(deleting_home, date(2024, 3, 9), open_store(deleting_home))

    version = open_store(nulls_home).config.entity_key_serialization_version
    u3 = serialize_entity_key(entity_key("user_features", {"user_id": "u3"}), entity_key_serialization_version=version)
    stored = raw_sqlite_rows(nulls_home, "user_features")[u3]
    assert all(np.isnan(value) for value, _ in stored.values())
    assert with_nulls.deleted["user_features"] == 0
    assert u3 not in raw_sqlite_rows(deleting_home, "user_features")
    assert without.deleted["user_features"] == 1
    assert without.rows["user_features"] == with_nulls.rows["user_features"] - 1
    assert probe_online(nulls_home, date(2024, 3, 9)).matched
    assert probe_online(deleting_home, date(2024, 3, 9)).matched


def test_rewritten_previous_partition_forces_full(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    store = open_store(settings)
    write_feature_partition(settings.warehouse_path, settings.offline_dir, "item_features", date(2024, 3, 9), settings.features, settings.zone)
    write = write_online(settings, date(2024, 3, 10), store)
    assert write.mode == "full"
    assert "item_features partition of 2024-03-09 was rewritten" in write.reason
    assert probe_online(settings, date(2024, 3, 10)).matched


def test_full_write_covers_missed_days(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    store = open_store(settings)
    newest = date(2024, 3, 12)
    for day in (date(2024, 3, 11), newest):
        write_features(settings, day)

    write = write_online(settings, newest, store)

    assert write.mode == "full"
    assert "reflects 2024-03-09" in write.reason
    assert write.start == day_bounds(date(2024, 3, 10), settings.zone)[0]
    assert probe_online(settings, newest).matched


def test_full_write_without_watermark_reads_window(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    store = open_store(settings)
    clear_watermark(store.config)
    day = date(2024, 3, 10)

    first = full_write_first_day(settings, store, day, day)

    assert first == day - timedelta(days=settings.features.max_window_days - 1)


def test_copied_store_keeps_its_day_but_no_diff(written_to_march_9: Settings, tmp_path: Path) -> None:
    import shutil

    copy = load_settings(shutil.copytree(written_to_march_9.home, tmp_path / "copy"))
    config = open_store(copy).config
    # The copy contains the rows of 9 March, so days since count to that day, but the copied
    # file is not the one the watermark names, so the next write is a full one.
    assert online_as_of_us(config, copy.zone) == epoch_us(feature_timestamp(date(2024, 3, 9), copy.zone))
    assert read_watermark(config) is None
    assert write_online(copy, date(2024, 3, 10)).mode == "full"


def test_changed_feature_config_forces_full(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    store = open_store(settings)
    changed = settings.model_copy(update={"features": settings.features.model_copy(update={"windows_days": (1, 7, 27, 28)})})
    mode, reason = plan_online_write(changed, store, date(2024, 3, 10), date(2024, 3, 10))
    assert mode == "full"
    assert "feature columns or settings changed" in reason


def test_training_days_since_equal_old_sql(core_tiny_home: Settings) -> None:
    # The old features computed epoch(as_of - max(event_time)) / 86400 in DuckDB, as of the
    # feature timestamp of the day before the label day.
    settings = core_tiny_home
    rows, _ = build_training_rows(settings, date(2024, 3, 10))
    as_of = feature_timestamp(date(2024, 3, 9), settings.zone)
    checks = {
        "u_days_since_last_event": ("user_id", 28, ""),
        "u_days_since_last_purchase": ("user_id", 28, "FILTER (event_type = 'purchase')"),
        "i_days_since_last_event": ("item_id", 28, ""),
        "i_days_since_last_purchase": ("item_id", 28, "FILTER (event_type = 'purchase')"),
    }
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for column, (key, window, purchase_filter) in checks.items():
            old = dict(
                con.execute(
                    f"SELECT {key}, epoch($as_of::TIMESTAMPTZ - max(event_time) {purchase_filter}) / 86400.0 FROM events "
                    f"WHERE event_day BETWEEN $first AND $last GROUP BY {key}",
                    {"as_of": as_of, "first": date(2024, 3, 9) - timedelta(days=window - 1), "last": date(2024, 3, 9)},
                ).fetchall()
            )
            for entity, value in zip(rows[key], rows[column]):
                expected = old.get(entity)
                if expected is None:
                    assert pd.isna(value), f"{column} {entity}"
                else:
                    assert value == expected, f"{column} {entity}"
        pairs = dict(
            ((user, item), value)
            for user, item, value in con.execute(
                "SELECT user_id, item_id, epoch($as_of::TIMESTAMPTZ - max(event_time)) / 86400.0 FROM events "
                "WHERE event_day BETWEEN $first AND $last AND user_id IS NOT NULL GROUP BY user_id, item_id",
                {"as_of": as_of, "first": date(2024, 3, 9) - timedelta(days=89), "last": date(2024, 3, 9)},
            ).fetchall()
        )
    finally:
        con.close()
    for user, item, value in zip(rows["user_id"], rows["item_id"], rows["ui_days_since_last_event"]):
        expected = pairs.get((user, item))
        assert (pd.isna(value) if expected is None else value == expected), f"{user} {item}: {value} != {expected}"
    assert rows["u_days_since_last_event"].notna().any()


@pytest.fixture
def redis_home(tmp_path: Path, redis_server: str, core_home_builder, core_shop) -> Settings:
    """A tiny-shop home on an emptied Redis online store, without feature partitions."""
    import redis

    redis.Redis.from_url(f"redis://{redis_server}").flushall()
    settings = core_home_builder(tmp_path / "home", core_shop(), ())
    online = OnlineStoreConfig(type="redis", connection_string=redis_server)
    save_settings(settings.model_copy(update={"online_store": online}))
    return load_settings(settings.home)


def test_redis_replay_like_full_writes(redis_home: Settings, core_publish, core_event_row, monkeypatch) -> None:
    settings = small_buckets(redis_home)
    import redis as redis_client

    client = redis_client.Redis.from_url(f"redis://{settings.online_store.connection_string}")
    monkeypatch.setattr(online_writer, "_CHUNK_ROWS", SMALL_CHUNK)
    writes, _ = replay(settings, core_publish, core_event_row)
    assert max(max(write.rows.values()) for write in writes.values()) > 2 * SMALL_CHUNK
    assert writes["2024-03-12"].mode == "diff"
    assert writes["2024-03-13"].mode == "diff"
    assert_feast_reads_expected(settings)
    config = open_store(settings).config
    version = config.entity_key_serialization_version
    for view in FEATURE_VIEWS:
        expected = expected_rows(settings, view)
        for record in expected.to_dict("records"):
            stored = client.hgetall(_redis_key(config.project, entity_key(view, record), entity_key_serialization_version=version))
            for name in feature_columns(view, settings.features):
                actual = decode(stored.get(_mmh3(f"{view}:{name}")))
                np.testing.assert_equal(actual, float(record[name]), err_msg=f"{view} {record} {name}")
        # The hashes of entities that left every window are gone, not filled with nulls.
        expired = expected.drop(with_values(expected, settings, view).index)
        assert len(expired) == (1 if view in ("user_features", "item_features") else 0), view
        for record in expired.to_dict("records"):
            key = _redis_key(config.project, entity_key(view, record), entity_key_serialization_version=version)
            assert client.exists(key) == 0, record


def test_redis_flush_loses_watermark(redis_home: Settings) -> None:
    settings = redis_home
    import redis as redis_client

    write_features(settings, FIRST_DAY)
    store = open_store(settings)
    write_online(settings, FIRST_DAY, store)
    assert read_watermark(store.config).day == FIRST_DAY.isoformat()
    redis_client.Redis.from_url(f"redis://{settings.online_store.connection_string}").flushall()
    assert read_watermark(store.config) is None
    next_day = FIRST_DAY + timedelta(days=1)
    write_features(settings, next_day)
    assert write_online(settings, next_day, store).mode == "full"



def add_ghost_user(settings: Settings, day: date) -> bytes:
    """Write a user that no partition contains into the online store, as a correction that removed its events leaves it."""
    store = open_store(settings)
    row = pq.read_table(settings.offline_dir / "user_features" / f"{day.isoformat()}.parquet").slice(0, 1)
    ghost = row.set_column(row.schema.get_field_index("user_id"), "user_id", pa.array(["ghost"]))
    writer = online_writer.bulk_writer(settings.online_store)
    writer(store, "user_features", ghost, feature_columns("user_features", settings.features))
    return serialize_entity_key(entity_key("user_features", {"user_id": "ghost"}), entity_key_serialization_version=store.config.entity_key_serialization_version)


def full_write_of_march_10(settings: Settings) -> OnlineWrite:
    store = open_store(settings)
    clear_watermark(store.config)
    write = write_online(settings, date(2024, 3, 10), store)
    assert write.mode == "full"
    return write


def test_full_write_prunes_removed_entity(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    ghost = add_ghost_user(settings, date(2024, 3, 9))
    assert ghost in raw_sqlite_rows(settings, "user_features")
    write = full_write_of_march_10(settings)
    assert ghost not in raw_sqlite_rows(settings, "user_features")
    assert write.pruned == {"user_features": 1, "item_features": 0, "user_item_features": 0, "user_category_features": 0}
    online = open_store(settings).get_online_features(features=["user_features:u_views_28d"], entity_rows=[{"user_id": "ghost"}]).to_dict()
    assert online["u_views_28d"] == [None]
    assert probe_online(settings, date(2024, 3, 10)).matched


def test_prune_sets_nulls_without_delete_expired(written_to_march_9: Settings) -> None:
    settings = written_to_march_9
    online = settings.online_store.model_copy(update={"delete_expired": False})
    save_settings(settings.model_copy(update={"online_store": online}))
    settings = load_settings(settings.home)
    ghost = add_ghost_user(settings, date(2024, 3, 9))
    write = full_write_of_march_10(settings)
    stored = raw_sqlite_rows(settings, "user_features")[ghost]
    assert all(np.isnan(value) for value, _ in stored.values())
    # u3 left its window on 9 March and its values are null already, so only the ghost counts.
    assert write.pruned["user_features"] == 1


def test_redis_full_write_prunes_removed_entity(redis_home: Settings, core_feature_days) -> None:
    settings = redis_home
    import redis as redis_client

    client = redis_client.Redis.from_url(f"redis://{settings.online_store.connection_string}")
    for day in (day for day in core_feature_days if day <= date(2024, 3, 10)):
        write_features(settings, day)
    write_online(settings, date(2024, 3, 9), open_store(settings))
    add_ghost_user(settings, date(2024, 3, 9))
    config = open_store(settings).config
    key = _redis_key(config.project, entity_key("user_features", {"user_id": "ghost"}), entity_key_serialization_version=config.entity_key_serialization_version)
    assert client.exists(key) == 1
    write = full_write_of_march_10(settings)
    assert client.exists(key) == 0
    assert write.pruned["user_features"] == 1
    assert write.pruned["user_item_features"] == 0
    assert probe_online(settings, date(2024, 3, 10)).matched
