"""Bulk writer of feature rows into Feast's online stores, in Feast's own storage layout.

Feast 0.67's ``materialize`` serializes every value and upserts one SQLite row per
statement, about 7,000 entity rows per second here (docs/benchmarks.md). This writer
keeps Feast's layout, so ``FeatureStore.get_online_features`` reads what it writes, but
serializes each distinct value once and writes with ``executemany`` (SQLite) or one
pipeline per chunk (Redis). Feast's helpers build the keys, so the layout follows the
installed Feast version.

It writes the newest row of each entity among the given rows, like ``materialize``, but
where that row is an expiry row (every feature null: the entity left its view's window),
it deletes the entity's values instead of writing nulls. Feast reads a deleted entity as
null values, as it reads the expiry row, and the store holds only the entities of the
current windows instead of every entity ever seen.

Feast's SQLite tables carry a second index on ``entity_key``, which repeats the first
column of their primary key. The writer empties it (``set_entity_index``).

Given the rows of ``changed_rows``, the SQLite writer writes only the values that changed
(see ``_sqlite_records``). A SQLite table has one row per entity and feature, and the
write's cost follows those rows.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from freshrank.config import OnlineStoreConfig
from freshrank.warehouse import MemoryBound, arrow_query, sql_identifier, sql_string

logger = logging.getLogger(__name__)

_REDIS_CHUNK = 5000
_CHUNK_ROWS = 250_000
"""Entity rows whose Python objects are built at once by the writers."""
_ROW = "__freshrank_row"
_CHANGED_PREFIX = "__freshrank_changed__"
_PRESENT = "__freshrank_present"


@dataclass(frozen=True)
class WriteStats:
    """Counts of one bulk write: entity rows and (entity, feature) values written, and entities deleted or pruned."""

    entities: int
    values: int
    deleted: int = 0
    pruned: int = 0
    """Entities removed because the newest partition no longer contains them (``freshrank.online_prune``)."""

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            self.entities + other.entities,
            self.values + other.values,
            self.deleted + other.deleted,
            self.pruned + other.pruned,
        )


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

    def blobs(self, values: list[float | None]) -> list[bytes]:
        """Return the serialized ValueProto of each value."""
        cache = self.cache
        return [(cache.get(value) or self.encode(value))[0] for value in values]


_DOUBLE_TAG = 0x29
"""Protobuf tag of ``Value.double_val``: field 5, wire type 1 (eight little-endian bytes)."""


def value_blobs(column: pa.ChunkedArray | pa.Array, encoder: _ValueEncoder) -> list[bytes]:
    """Return the serialized ValueProto of each value of a feature column; null becomes an empty Value.

    A DOUBLE column is serialized with numpy: a tag byte and the value's eight bytes, the
    protobuf encoding of ``Value(double_val=x)``, checked against protobuf at the first,
    middle and last row. Other types, or a failed check, go through ``encoder`` one value at a time.
    """
    if pa.types.is_float64(column.type) and len(column):
        values = np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype="<f8")
        framed = np.empty((len(values), 9), dtype=np.uint8)
        framed[:, 0] = _DOUBLE_TAG
        framed[:, 1:] = values.view(np.uint8).reshape(-1, 8)
        blobs = framed.view("V9").ravel().tolist()
        empty = encoder.encode(None)[0]
        for row in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            blobs[row] = empty
        sample = sorted({0, len(values) // 2, len(values) - 1})
        if all(blobs[row] == encoder.encode(column[row].as_py())[0] for row in sample):
            return blobs
        logger.warning("protobuf encodes doubles differently; serializing values one at a time")
    return encoder.blobs(column.to_pylist())


def value_texts(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """Return ``value_text`` of each value as Feast's SQLite store writes it: ``str`` of the number, None for null."""
    texts: list[str | None] = list(map(str, column.to_numpy(zero_copy_only=False).tolist()))
    for row in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
        texts[row] = None
    return texts


def per_distinct(column: pa.ChunkedArray | pa.Array, convert, result_type: pa.DataType) -> list:
    """Apply ``convert`` to each distinct value of ``column`` once and return one result per row.

    Timestamps are the use: a partition contains a few distinct instants, and converting an
    Arrow timestamp to a Python ``datetime`` costs microseconds per row.
    """
    distinct = pc.unique(column)
    converted = pa.array([convert(value) for value in distinct.to_pylist()], result_type)
    return converted.take(pc.index_in(column, value_set=distinct)).to_pylist()


def _redis_stamp(instant: datetime) -> bytes:
    """Serialize an instant as the protobuf Timestamp that Feast's Redis store writes, in UTC."""
    proto = Timestamp()
    proto.FromDatetime(_aware_utc(instant))
    return proto.SerializeToString()


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


def split_expired(rows: pa.Table, features: list[str]) -> tuple[pa.Table, pa.Table]:
    """Split ``rows`` into rows with a value among ``features`` and expiry rows, all null there.

    Without ``features`` no row counts as an expiry row.
    """
    if not features:
        return rows, rows.slice(0, 0)
    empty = functools.reduce(pc.and_, (pc.is_null(rows.column(name)) for name in features))
    return rows.filter(pc.invert(empty)), rows.filter(empty)


def changed_column(feature: str) -> str:
    """Return the name of the column that flags the changed values of ``feature`` in ``changed_rows``."""
    return f"{_CHANGED_PREFIX}{feature}"


def changed_rows(
    current: Path, previous: Path, join_keys: list[str], features: list[str], memory: MemoryBound | None = None
) -> pa.Table:
    """Return the rows of partition ``current`` whose feature values differ from partition ``previous``.

    A row counts as changed when its entity is new or any feature differs. The event and
    created timestamps are not compared. NULL equals NULL here, so an all-null expiry row
    is new only on the day the entity leaves. Entities of ``previous`` missing from
    ``current`` yield nothing, because they left earlier and their expiry row was written
    then. ``memory`` bounds the DuckDB connection.

    Each feature gets a boolean column ``changed_column(feature)``: true where its value
    differs from the previous row, and for every feature of an entity whose previous row
    is missing or all null, because the online store then has none of its values.
    """
    on = " AND ".join(f"c.{sql_identifier(key)} IS NOT DISTINCT FROM p.{sql_identifier(key)}" for key in join_keys)
    differs = [f"c.{sql_identifier(name)} IS DISTINCT FROM p.{sql_identifier(name)}" for name in features]
    fresh = " AND ".join(f"p.{sql_identifier(name)} IS NULL" for name in features) or "FALSE"
    flags = "".join(
        f", ({fresh}) OR {condition} AS {sql_identifier(changed_column(name))}" for name, condition in zip(features, differs)
    )
    query = f"""
        SELECT c.*{flags}
        FROM read_parquet({sql_string(current)}) AS c
        LEFT JOIN (SELECT *, TRUE AS {_PRESENT} FROM read_parquet({sql_string(previous)})) AS p ON {on}
        WHERE p.{_PRESENT} IS NULL {"".join(f" OR {condition}" for condition in differs)}
    """
    return arrow_query(query, memory)


def bulk_writer(online: OnlineStoreConfig):
    """Return the bulk write function of the configured online store: ``(store, view, table, features)``."""
    if online.type == "redis":
        return functools.partial(write_redis, delete_expired=online.delete_expired)
    return functools.partial(write_sqlite, entity_index=online.sqlite_entity_index, delete_expired=online.delete_expired)


def write_sqlite(
    store: FeatureStore,
    view: str,
    table: pa.Table,
    features: list[str],
    entity_index: bool = False,
    delete_expired: bool = True,
) -> WriteStats:
    """Upsert rows into the SQLite online table of a feature view and delete expired entities, in one transaction.

    Rows go in primary-key order (entity key, feature name), because B-tree inserts in
    order are several times faster than random ones, and ``_CHUNK_ROWS`` entities at a
    time, so the Python objects of only one chunk are alive at once. ``entity_index``
    keeps Feast's second index on ``entity_key`` full (see ``set_entity_index``).
    ``delete_expired`` deletes the entities of expiry rows instead of writing their nulls.
    """
    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    version = config.entity_key_serialization_version
    current, expired = split_expired(newest_rows(table, join_keys), features if delete_expired else [])
    rows, keys = _in_key_order(current, join_keys, version)
    expired_keys = sorted(serialized_entity_keys(expired, join_keys, version))
    table_name = compute_table_id(config.project, feature_view, config.registry.enable_online_feature_view_versioning)
    upsert = (
        f'INSERT INTO "{table_name}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    delete = f'DELETE FROM "{table_name}" WHERE entity_key = ?'
    encoder = _ValueEncoder()
    values = 0
    connection = sqlite3.connect(config.online_store.path, timeout=60)
    try:
        connection.execute("PRAGMA cache_size = -262144")
        set_entity_index(connection, table_name, full=entity_index)
        with connection:
            for start in range(0, rows.num_rows, _CHUNK_ROWS):
                chunk = rows.slice(start, _CHUNK_ROWS)
                records, count = _sqlite_records(chunk, keys.slice(start, _CHUNK_ROWS).to_pylist(), features, encoder)
                connection.executemany(upsert, records)
                values += count
            connection.executemany(delete, ((key,) for key in expired_keys))
    finally:
        connection.close()
    return WriteStats(entities=rows.num_rows, values=values, deleted=expired.num_rows)


def set_entity_index(connection: sqlite3.Connection, table_name: str, full: bool) -> None:
    """Make Feast's second index of an online table, on ``entity_key`` alone, full or empty.

    Feast's SQLite store creates each table with the primary key (entity_key, feature_name)
    and then ``CREATE INDEX IF NOT EXISTS <table>_ek ON <table> (entity_key)``. Lookups by
    entity key use the primary key's index just as well, and every row of a new entity is
    written into both indexes. Unless ``full``, the second one is replaced by an empty
    partial index of the same name (``WHERE 0``), which Feast's ``IF NOT EXISTS`` then
    leaves alone when it applies the definitions again.
    """
    name = f"{table_name}_ek"
    expected = f'CREATE INDEX "{name}" ON "{table_name}" (entity_key)' + ("" if full else " WHERE 0")
    found = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", [name]).fetchone()
    if found is not None and (found[0] == expected or (full and "WHERE" not in found[0].upper())):
        return
    logger.info("rebuilding index %s as %s", name, "full" if full else "empty")
    connection.execute("BEGIN")
    try:
        connection.execute(f'DROP INDEX IF EXISTS "{name}"')
        connection.execute(expected)
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def _in_key_order(rows: pa.Table, join_keys: list[str], version: int) -> tuple[pa.Table, pa.Array]:
    """Return ``rows`` sorted by serialized entity key, and the keys in that order."""
    parts = [
        pa.array(serialized_entity_keys(rows.slice(start, _CHUNK_ROWS), join_keys, version), pa.binary())
        for start in range(0, rows.num_rows, _CHUNK_ROWS)
    ]
    keys = pa.concat_arrays(parts) if parts else pa.array([], pa.binary())
    order = pc.sort_indices(keys)
    return rows.take(order), keys.take(order)


def _sqlite_records(chunk: pa.Table, keys: list[bytes], features: list[str], encoder: _ValueEncoder) -> tuple[zip, int]:
    """Return the records of ``chunk`` to upsert, in primary-key order, and their count.

    Every feature of each entity is written, or with the flags of ``changed_rows`` only
    the changed ones and the feature that sorts last. Feast's SQLite store reports an
    entity's event timestamp from the row it reads last, in primary-key order, which is
    that feature's row. So the reported timestamp stays the day the entity last changed.
    NOTE: with ``sqlite_entity_index: true`` SQLite may read through that index, in rowid
    order. That is the same order for entities this writer inserted (features by name),
    not necessarily for entities Feast's ``materialize`` inserted.
    """
    names = sorted(features)
    written = _written_values(chunk, names)
    rows, columns = np.nonzero(written)
    row_list = rows.tolist()
    # Position of each value in the per-feature lists laid end to end.
    positions = (columns * chunk.num_rows + rows).tolist()
    blobs, texts = [], []
    for name in names:
        column = chunk.column(name)
        blobs.extend(value_blobs(column, encoder))
        texts.extend(value_texts(column) if pa.types.is_float64(column.type) else [encoder.encode(value)[1] for value in column.to_pylist()])
    event_ts = per_distinct(chunk.column("event_timestamp"), _sqlite_timestamp, pa.int64())
    created_ts = per_distinct(chunk.column("created_timestamp"), _sqlite_timestamp, pa.int64())
    records = zip(
        [keys[row] for row in row_list],
        [names[column] for column in columns.tolist()],
        [blobs[position] for position in positions],
        [texts[position] for position in positions],
        [event_ts[row] for row in row_list],
        [created_ts[row] for row in row_list],
    )
    return records, len(row_list)


def _written_values(chunk: pa.Table, names: list[str]) -> np.ndarray:
    """Return which (row, feature) values of ``chunk`` to write, one column per name in ``names``."""
    flags = [changed_column(name) for name in names]
    if not names or not all(flag in chunk.column_names for flag in flags):
        return np.ones((chunk.num_rows, len(names)), dtype=bool)
    written = np.column_stack([chunk.column(flag).to_numpy(zero_copy_only=False).astype(bool) for flag in flags])
    written[:, -1] = True
    return written


def write_redis(store: FeatureStore, view: str, table: pa.Table, features: list[str], delete_expired: bool = True) -> WriteStats:
    """Write rows into Redis hashes as Feast's Redis store does, overwriting what is there.

    The Python objects of ``_CHUNK_ROWS`` entities are built at a time; each pipeline
    carries ``_REDIS_CHUNK`` entities. With ``delete_expired``, the entity of an expiry row
    loses the view's fields instead, and Redis removes its hash once no field is left.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    rows, expired = split_expired(newest_rows(table, join_keys), features if delete_expired else [])
    client = RedisOnlineStore()._get_client(config.online_store)
    sample = rows if rows.num_rows else expired
    keys_of = redis_keys_builder(config.project, join_keys, config.entity_key_serialization_version, sample)
    ts_key = f"_ts:{view}"
    field_keys = [_mmh3(f"{view}:{feature}") for feature in features]
    fields = [ts_key, *field_keys]
    encoder = _ValueEncoder()
    for chunk_start in range(0, rows.num_rows, _CHUNK_ROWS):
        chunk = rows.slice(chunk_start, _CHUNK_ROWS)
        # One column of serialized values per hash field, the view's timestamp first.
        columns = [per_distinct(chunk.column("event_timestamp"), _redis_stamp, pa.binary())]
        columns += [value_blobs(chunk.column(feature), encoder) for feature in features]
        entities = list(zip(keys_of(chunk), zip(*columns)))
        for start in range(0, len(entities), _REDIS_CHUNK):
            with client.pipeline(transaction=False) as pipe:
                for redis_key, values in entities[start : start + _REDIS_CHUNK]:
                    pipe.hset(redis_key, mapping=dict(zip(fields, values)))
                pipe.execute()
    expired_keys = keys_of(expired) if expired.num_rows else []
    for start in range(0, len(expired_keys), _REDIS_CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for redis_key in expired_keys[start : start + _REDIS_CHUNK]:
                pipe.hdel(redis_key, ts_key, *field_keys)
            pipe.execute()
    return WriteStats(entities=rows.num_rows, values=rows.num_rows * len(features), deleted=expired.num_rows)


def redis_keys_builder(project: str, join_keys: list[str], version: int, rows: pa.Table):
    """Return a function from rows to their Redis keys: entity key + project, or Feast's own keys.

    The concatenation is checked once against Feast's ``_redis_key`` on the first row.
    """
    suffix = project.encode("utf-8")

    def concatenated(chunk: pa.Table) -> list[bytes]:
        return [key + suffix for key in serialized_entity_keys(chunk, join_keys, version)]

    def by_feast(chunk: pa.Table) -> list[bytes]:
        return [_redis_key(project, key, entity_key_serialization_version=version) for key in _entity_keys(chunk, join_keys)]

    if rows.num_rows == 0:
        return concatenated
    first = rows.slice(0, 1)
    if concatenated(first)[0] == by_feast(first)[0]:
        return concatenated
    logger.warning("Redis keys of Feast differ from entity key + project; building them with Feast")
    return by_feast


def _sqlite_timestamp(value: datetime) -> int:
    """Convert a timestamp as Feast's SQLite adapter does: naive UTC, then ``int(timestamp())``."""
    naive = value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
    return int(naive.timestamp())


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
