"""Removing entities from the online store that the newest feature partition no longer contains.

A day's partition of a view contains every entity with events in the view's window, plus an
expiry row for each entity that left the window that day. An entity that a correction
removed from history (its events deleted or replaced) has neither: it vanishes from the
recomputed partitions, so no write ever touches it and the store would keep serving its
old values. A full write therefore ends with a prune: every entity of the view that the
newest partition does not contain with values is deleted, or with
``online_store.delete_expired: false`` set to null values, as an expiry row would be.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import struct
from collections.abc import Iterable

import pyarrow as pa
from feast import FeatureStore
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from freshrank.config import OnlineStoreConfig
from freshrank.online_writer import redis_keys_builder, serialized_entity_keys

logger = logging.getLogger(__name__)

_SCAN_BATCH = 5000
_EMPTY_VALUE = ValueProto().SerializeToString()


def prune_absent(
    store: FeatureStore, view: str, present: Iterable[pa.Table], features: list[str], online: OnlineStoreConfig
) -> int:
    """Remove the entities of ``view`` that no table of ``present`` contains; return how many were removed.

    ``present`` yields tables of the view's join keys: the entities of the newest partition
    that have values. The tables are read once, one at a time.
    """
    if online.type == "redis":
        removed = _prune_redis(store, view, present, features, online.delete_expired)
    else:
        removed = _prune_sqlite(store, view, present, online.delete_expired)
    if removed:
        logger.info("%s: removed %d entities that the newest partition does not contain from the online store", view, removed)
    return removed


def _join_keys(store: FeatureStore, view: str) -> list[str]:
    return [column.name for column in store.get_feature_view(view).entity_columns]


def _prune_sqlite(store: FeatureStore, view: str, present: Iterable[pa.Table], delete: bool) -> int:
    """Delete (or set to null) the rows of entities missing from ``present``, in one transaction."""
    config = store.config
    feature_view = store.get_feature_view(view)
    join_keys = [column.name for column in feature_view.entity_columns]
    version = config.entity_key_serialization_version
    table_name = compute_table_id(config.project, feature_view, config.registry.enable_online_feature_view_versioning)
    absent = "entity_key NOT IN (SELECT entity_key FROM temp.present_entities)"
    if delete:
        statement, parameters = f'DELETE FROM "{table_name}" WHERE {absent} RETURNING entity_key', []
    else:
        statement = f'UPDATE "{table_name}" SET value = ?, value_text = NULL WHERE value != ? AND {absent} RETURNING entity_key'
        parameters = [_EMPTY_VALUE, _EMPTY_VALUE]
    connection = sqlite3.connect(config.online_store.path, timeout=60)
    try:
        connection.execute("PRAGMA cache_size = -262144")
        connection.execute("CREATE TEMP TABLE present_entities (entity_key BLOB PRIMARY KEY) WITHOUT ROWID")
        for table in present:
            keys = sorted(serialized_entity_keys(table, join_keys, version))
            connection.executemany("INSERT OR IGNORE INTO temp.present_entities VALUES (?)", ((key,) for key in keys))
        with connection:
            removed = {row[0] for row in connection.execute(statement, parameters)}
    finally:
        connection.close()
    return len(removed)


def _prune_redis(store: FeatureStore, view: str, present: Iterable[pa.Table], features: list[str], delete: bool) -> int:
    """Delete (or set to null) the view's hash fields of entities missing from ``present``.

    The present entities' Redis keys go into a temporary set. A scan over the project's
    keys then looks up each key of the view's entity type in that set.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    join_keys = _join_keys(store, view)
    version = config.entity_key_serialization_version
    client = RedisOnlineStore()._get_client(config.online_store)
    suffix = config.project.encode("utf-8")
    present_set = f"freshrank:{config.project}:present:{view}"
    value_fields = [_mmh3(f"{view}:{feature}") for feature in features]
    fields = [f"_ts:{view}".encode(), *value_fields]
    removed = 0
    client.delete(present_set)
    try:
        keys_of = None
        for table in present:
            keys_of = keys_of or redis_keys_builder(config.project, join_keys, version, table)
            keys = keys_of(table)
            for start in range(0, len(keys), _SCAN_BATCH):
                client.sadd(present_set, *keys[start : start + _SCAN_BATCH])
        scanned = client.scan_iter(match=b"*" + _glob_literal(suffix), count=_SCAN_BATCH)
        while batch := list(itertools.islice(scanned, _SCAN_BATCH)):
            candidates = [key for key in batch if _is_entity_of(key, suffix, join_keys, version)]
            if not candidates:
                continue
            members = client.smismember(present_set, candidates)
            absent = [key for key, member in zip(candidates, members) if not member]
            removed += _clear_fields(client, absent, fields, value_fields, delete)
    finally:
        client.delete(present_set)
    return removed


def _clear_fields(client, keys: list[bytes], fields: list[bytes], value_fields: list[bytes], delete: bool) -> int:
    """Delete the view's fields of ``keys``, or set its values to null; return the entities changed.

    In null mode an entity whose values are all null already (it expired before) is left
    alone and not counted.
    """
    if not keys:
        return 0
    if delete:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hdel(key, *fields)
            return sum(1 for fields_removed in pipe.execute() if fields_removed)
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, value_fields)
        stored = pipe.execute()
    holding = [key for key, values in zip(keys, stored) if any(value not in (None, _EMPTY_VALUE) for value in values)]
    with client.pipeline(transaction=False) as pipe:
        for key in holding:
            pipe.hset(key, mapping=dict.fromkeys(value_fields, _EMPTY_VALUE))
        pipe.execute()
    return len(holding)


def _is_entity_of(key: bytes, suffix: bytes, join_keys: list[str], version: int) -> bool:
    """Return whether a Redis key is an entity key of the given join keys, followed by the project."""
    if not key.endswith(suffix):
        return False
    try:
        entity = deserialize_entity_key(key[: len(key) - len(suffix)], entity_key_serialization_version=version)
    except (ValueError, struct.error, IndexError):
        # Another application's key that happens to end with the project name.
        return False
    return sorted(entity.join_keys) == sorted(join_keys)


def _glob_literal(text: bytes) -> bytes:
    """Escape the glob characters of Redis ``SCAN MATCH`` in ``text``."""
    return b"".join(b"\\" + bytes([byte]) if byte in b"*?[]\\" else bytes([byte]) for byte in text)
