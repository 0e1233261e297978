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

import itertools
import logging
import sqlite3
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

logger = logging.getLogger(__name__)

_REDIS_CHUNK = 5000
_ROW = "__freshrank_row"


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


def _entity_keys(table: pa.Table, join_keys: list[str]) -> list[EntityKeyProto]:
    columns = [table.column(key).to_pylist() for key in join_keys]
    keys = []
    for values in zip(*columns):
        keys.append(
            EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(string_val=str(value)) for value in values])
        )
    return keys


def serialized_entity_keys(table: pa.Table, join_keys: list[str], version: int) -> list[bytes]:
    """Return Feast's serialized entity key of each row, for string join keys.

    Version 3 keys are concatenated here from per-value parts, which is several times
    faster than building a proto per row. Rows at the start, middle and end are checked
    against Feast's ``serialize_entity_key``. If any differs (another Feast layout), every
    key is serialized by Feast.
    """
    if table.num_rows == 0:
        return []
    keys = _concatenated_keys(table, join_keys) if version == 3 else None
    if keys is not None:
        sample = sorted({0, table.num_rows // 2, table.num_rows - 1})
        protos = _entity_keys(table.take(sample), join_keys)
        if all(keys[row] == serialize_entity_key(proto, entity_key_serialization_version=version) for row, proto in zip(sample, protos)):
            return keys
        logger.warning("entity keys of Feast differ from the version 3 layout; serializing them with Feast")
    return [serialize_entity_key(key, entity_key_serialization_version=version) for key in _entity_keys(table, join_keys)]


def _concatenated_keys(table: pa.Table, join_keys: list[str]) -> list[bytes]:
    """Concatenate version 3 keys: key count, names sorted, then each value as type, length, UTF-8 bytes."""
    names = sorted(join_keys)
    prefix = struct.pack("<I", len(names)) + b"".join(
        struct.pack("<II", ValueType.STRING, len(name.encode("utf8"))) + name.encode("utf8") for name in names
    )
    parts = []
    for name in names:
        values = [str(value).encode("utf8") for value in table.column(name).to_pylist()]
        parts.append([struct.pack("<II", ValueType.STRING, len(value)) + value for value in values])
    if len(parts) == 1:
        return [prefix + part for part in parts[0]]
    return [prefix + b"".join(row) for row in zip(*parts)]


def newest_rows(table: pa.Table, join_keys: list[str]) -> pa.Table:
    """Keep the newest row of each entity by (event_timestamp, created_timestamp)."""
    ordered = table.sort_by([("event_timestamp", "descending"), ("created_timestamp", "descending")])
    ordered = ordered.append_column(_ROW, pa.array(np.arange(ordered.num_rows, dtype=np.int64)))
    # Without threads, group_by keeps the order of the rows, so the smallest row number of
    # each entity is its newest row.
    first = ordered.group_by(join_keys, use_threads=False).aggregate([(_ROW, "min")]).column(f"{_ROW}_min")
    return ordered.drop_columns([_ROW]).take(first)


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
    keys = serialized_entity_keys(rows, join_keys, config.entity_key_serialization_version)
    event_ts = _sqlite_timestamps(rows.column("event_timestamp").to_pylist())
    created_ts = _sqlite_timestamps(rows.column("created_timestamp").to_pylist())
    # Rows in primary-key order (entity key, feature name): B-tree inserts in order are
    # several times faster than random ones.
    order = sorted(range(len(keys)), key=keys.__getitem__)
    keys = [keys[index] for index in order]
    event_ts = [event_ts[index] for index in order]
    created_ts = [created_ts[index] for index in order]
    encoder = _ValueEncoder()
    per_feature = []
    for name in sorted(features):
        column = rows.column(name).to_pylist()
        encoded = [encoder.encode(column[index]) for index in order]
        blobs = [blob for blob, _ in encoded]
        texts = [text for _, text in encoded]
        per_feature.append(zip(keys, itertools.repeat(name), blobs, texts, event_ts, created_ts))
    # One record per (entity, feature), entity-major, built lazily by zip in C.
    records = itertools.chain.from_iterable(zip(*per_feature))
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
    return WriteStats(entities=rows.num_rows, values=rows.num_rows * len(features))


def write_redis(store: FeatureStore, view: str, table: pa.Table, features: list[str]) -> WriteStats:
    """Write rows into Redis hashes as Feast's Redis store does, overwriting what is there."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    rows = newest_rows(table, join_keys)
    client = RedisOnlineStore()._get_client(config.online_store)
    version = config.entity_key_serialization_version
    project = config.project.encode("utf-8")
    redis_keys = [key + project for key in serialized_entity_keys(rows, join_keys, version)]
    if redis_keys:
        first = _entity_keys(rows.slice(0, 1), join_keys)[0]
        if redis_keys[0] != _redis_key(config.project, first, entity_key_serialization_version=version):
            logger.warning("Redis keys of Feast differ from entity key + project; building them with Feast")
            redis_keys = [_redis_key(config.project, key, entity_key_serialization_version=version) for key in _entity_keys(rows, join_keys)]
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
