"""Bulk writer of feature rows into Feast's online stores, in Feast's own storage layout.

Feast 0.67's ``materialize`` serializes every value and upserts one SQLite row per
statement, about 7,000 entity rows per second here (docs/benchmarks.md). This writer
keeps Feast's layout, so ``FeatureStore.get_online_features`` reads what it writes, but
serializes each distinct value once and writes with ``executemany`` (SQLite) or one
pipeline per chunk (Redis). Feast's helpers build the keys, so the layout follows the
installed Feast version.

It writes the newest row of each entity among the given rows, like ``materialize``.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

logger = logging.getLogger(__name__)

_REDIS_CHUNK = 5000


@dataclass(frozen=True)
class WriteStats:
    """Rows written by one bulk write: entity rows and (entity, feature) values."""

    entities: int
    values: int


class _ValueEncoder:
    """Serialized ValueProto bytes and text per distinct float; None becomes an empty Value."""

    def __init__(self) -> None:
        self.cache: dict[float | None, tuple[bytes, str | None]] = {None: (ValueProto().SerializeToString(), None)}

    def encode(self, value: float | None) -> tuple[bytes, str | None]:
        found = self.cache.get(value)
        if found is None:
            found = (ValueProto(double_val=value).SerializeToString(), str(value))
            self.cache[value] = found
        return found


def _entity_keys(table: pa.Table, join_keys: list[str], version: int) -> list[EntityKeyProto]:
    columns = [table.column(key).to_pylist() for key in join_keys]
    keys = []
    for values in zip(*columns):
        keys.append(
            EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(string_val=str(value)) for value in values])
        )
    return keys


def newest_rows(table: pa.Table, join_keys: list[str]) -> pa.Table:
    """Keep the newest row of each entity by (event_timestamp, created_timestamp)."""
    import pyarrow.compute as pc

    ordered = table.sort_by([("event_timestamp", "descending"), ("created_timestamp", "descending")])
    marker = pc.binary_join_element_wise(*[pc.cast(ordered.column(key), pa.string()) for key in join_keys], "\x1f")
    _, first = _first_occurrence(marker)
    return ordered.take(first)


def _first_occurrence(values: pa.ChunkedArray) -> tuple[list, pa.Array]:
    seen: dict = {}
    for index, value in enumerate(values.to_pylist()):
        seen.setdefault(value, index)
    return list(seen), pa.array(list(seen.values()), type=pa.int64())


def changed_rows(current: Path, previous: Path, join_keys: list[str], features: list[str]) -> pa.Table:
    """Return the rows of partition ``current`` whose feature values differ from partition ``previous``.

    A row counts as changed when its entity is new or any feature differs. The event and
    created timestamps are not compared. ``EXCEPT`` compares NULL with NULL as equal, so an
    all-null expiry row is new only on the day the entity leaves. Entities of ``previous``
    missing from ``current`` yield nothing, because they left earlier and their expiry row
    was written then.
    """
    compared = ", ".join(_quoted(name) for name in [*join_keys, *features])
    keys = ", ".join(_quoted(name) for name in join_keys)
    query = f"""
        WITH changed AS (
            SELECT {compared} FROM read_parquet({_literal(current)})
            EXCEPT
            SELECT {compared} FROM read_parquet({_literal(previous)})
        )
        SELECT rows.* FROM read_parquet({_literal(current)}) AS rows SEMI JOIN changed USING ({keys})
    """
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.sql(query).to_arrow_table()
    finally:
        connection.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def write_sqlite(store: FeatureStore, view: str, table: pa.Table, features: list[str]) -> WriteStats:
    """Upsert rows into the SQLite online table of a feature view."""
    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    rows = newest_rows(table, join_keys)
    keys = [
        serialize_entity_key(key, entity_key_serialization_version=config.entity_key_serialization_version)
        for key in _entity_keys(rows, join_keys, config.entity_key_serialization_version)
    ]
    event_ts = _sqlite_timestamps(rows.column("event_timestamp").to_pylist())
    created_ts = _sqlite_timestamps(rows.column("created_timestamp").to_pylist())
    encoder = _ValueEncoder()
    records = []
    order = sorted(range(len(keys)), key=keys.__getitem__)
    names = sorted(features)
    columns = [rows.column(feature).to_pylist() for feature in names]
    # Rows in primary-key order: B-tree inserts in order are several times faster than random ones.
    for index in order:
        key, event, created = keys[index], event_ts[index], created_ts[index]
        for name, column in zip(names, columns):
            blob, text = encoder.encode(column[index])
            records.append((key, name, blob, text, event, created))
    table_name = compute_table_id(config.project, feature_view, config.registry.enable_online_feature_view_versioning)
    sql = (
        f'INSERT INTO "{table_name}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    connection = sqlite3.connect(config.online_store.path, timeout=60)
    try:
        connection.execute("PRAGMA cache_size = -262144")
        with connection:
            connection.executemany(sql, records)
    finally:
        connection.close()
    return WriteStats(entities=rows.num_rows, values=len(records))


def write_redis(store: FeatureStore, view: str, table: pa.Table, features: list[str]) -> WriteStats:
    """Write rows into Redis hashes as Feast's Redis store does, overwriting what is there."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    rows = newest_rows(table, join_keys)
    client = RedisOnlineStore()._get_client(config.online_store)
    version = config.entity_key_serialization_version
    redis_keys = [_redis_key(config.project, key, entity_key_serialization_version=version) for key in _entity_keys(rows, join_keys, version)]
    ts_key = f"_ts:{view}"
    field_keys = [_mmh3(f"{view}:{feature}") for feature in features]
    columns = [rows.column(feature).to_pylist() for feature in features]
    timestamps = rows.column("event_timestamp").to_pylist()
    encoder = _ValueEncoder()
    stamp_cache: dict = {}
    values = 0
    for start in range(0, rows.num_rows, _REDIS_CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for index in range(start, min(start + _REDIS_CHUNK, rows.num_rows)):
                stamp = stamp_cache.get(timestamps[index])
                if stamp is None:
                    proto = Timestamp()
                    proto.FromDatetime(_aware_utc(timestamps[index]))
                    stamp = stamp_cache[timestamps[index]] = proto.SerializeToString()
                mapping = {ts_key: stamp}
                for field, column in zip(field_keys, columns):
                    mapping[field] = encoder.encode(column[index])[0]
                values += len(field_keys)
                pipe.hset(redis_keys[index], mapping=mapping)
            pipe.execute()
    return WriteStats(entities=rows.num_rows, values=values)


def _sqlite_timestamps(values: list[datetime]) -> list[int]:
    """Convert timestamps as Feast's SQLite adapter does: naive UTC, then ``int(timestamp())``."""
    converted: dict[datetime, int] = {}
    result = []
    for value in values:
        found = converted.get(value)
        if found is None:
            naive = value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
            found = converted[value] = int(naive.timestamp())
        result.append(found)
    return result


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
