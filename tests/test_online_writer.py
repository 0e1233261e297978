"""The bulk writer's entity keys, serialized values and newest-row selection against Feast's own helpers."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from freshrank.online_writer import (
    _redis_stamp,
    changed_column,
    changed_rows,
    _sqlite_timestamp,
    _ValueEncoder,
    newest_rows,
    per_distinct,
    serialized_entity_keys,
    value_blobs,
    value_texts,
)

DOUBLES = pa.chunked_array([pa.array([1.0, None, 0.0, -2.5, float("nan"), 1.7e15, 5e-324]), pa.array([None, 3.0, -0.0])])
"""Feature values across two chunks: nulls, zero and negative zero, NaN, an epoch in microseconds, a subnormal."""


def _feast_key(join_keys: list[str], values: list[str]) -> bytes:
    proto = EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(string_val=value) for value in values])
    return serialize_entity_key(proto, entity_key_serialization_version=3)


@pytest.mark.parametrize(
    "join_keys",
    [["user_id"], ["user_id", "item_id"], ["user_id", "category"]],
)
def test_keys_equal_feast_serialization(join_keys):
    rows = [[f"u{i}", f"é-{i * 7}", ""] for i in range(20)]
    table = pa.table({key: [row[index] for row in rows] for index, key in enumerate(join_keys)})
    keys = serialized_entity_keys(table, join_keys, 3)
    expected = [_feast_key(join_keys, [row[index] for index in range(len(join_keys))]) for row in rows]
    assert keys == expected


def test_keys_of_empty_table():
    assert serialized_entity_keys(pa.table({"user_id": pa.array([], pa.string())}), ["user_id"], 3) == []


def test_newest_row_per_entity_kept():
    stamp = [datetime(2024, 1, day, tzinfo=timezone.utc) for day in (1, 3, 2, 1, 2)]
    table = pa.table(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "event_timestamp": stamp,
            "created_timestamp": stamp,
            "value": [1.0, 3.0, 2.0, 4.0, 5.0],
        }
    )
    newest = newest_rows(table, ["user_id"]).to_pydict()
    assert dict(zip(newest["user_id"], newest["value"])) == {"a": 3.0, "b": 5.0}
    assert newest_rows(table, ["user_id"]).column_names == table.column_names


def test_created_timestamp_breaks_ties():
    event = datetime(2024, 1, 1, tzinfo=timezone.utc)
    table = pa.table(
        {
            "user_id": ["a", "a"],
            "event_timestamp": [event, event],
            "created_timestamp": [datetime(2024, 1, 2, tzinfo=timezone.utc), datetime(2024, 1, 5, tzinfo=timezone.utc)],
            "value": [1.0, 2.0],
        }
    )
    assert newest_rows(table, ["user_id"]).column("value").to_pylist() == [2.0]


def _feast_value(value: float | None) -> ValueProto:
    return ValueProto() if value is None else ValueProto(double_val=value)


def test_double_blobs_equal_protobuf():
    expected = [_feast_value(value).SerializeToString() for value in DOUBLES.to_pylist()]
    assert value_blobs(DOUBLES, _ValueEncoder()) == expected


def test_blobs_of_other_types_go_through_protobuf():
    counts = pa.array([3, None, 0], pa.float32())
    expected = [_feast_value(value).SerializeToString() for value in counts.to_pylist()]
    assert value_blobs(counts, _ValueEncoder()) == expected


def test_texts_equal_feast_value_text():
    expected = [extract_text_and_num(_feast_value(value), False)[0] for value in DOUBLES.to_pylist()]
    assert value_texts(DOUBLES) == expected


def test_timestamps_converted_once_per_distinct_value():
    instants = [datetime(2024, 1, day, 23, 59, 59, tzinfo=timezone.utc) for day in (2, 1, 2, 2, 3)]
    column = pa.chunked_array([pa.array(instants[:2], pa.timestamp("us", "UTC")), pa.array(instants[2:], pa.timestamp("us", "UTC"))])
    seen = []

    def counted(instant: datetime) -> int:
        seen.append(instant)
        return _sqlite_timestamp(instant)

    assert per_distinct(column, counted, pa.int64()) == [int(instant.timestamp()) for instant in instants]
    assert sorted(seen) == sorted(set(instants))
    stamps = per_distinct(column, _redis_stamp, pa.binary())
    parsed = [Timestamp.FromString(blob).ToDatetime(tzinfo=timezone.utc) for blob in stamps]
    assert parsed == instants


def _partition(path: Path, rows: dict[str, tuple[float | None, float | None]]) -> Path:
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    table = pa.table(
        {
            "user_id": list(rows),
            "event_timestamp": pa.array([stamp] * len(rows), pa.timestamp("us", "UTC")),
            "f_a": pa.array([values[0] for values in rows.values()], pa.float64()),
            "f_b": pa.array([values[1] for values in rows.values()], pa.float64()),
            "created_timestamp": pa.array([stamp] * len(rows), pa.timestamp("us", "UTC")),
        }
    )
    pq.write_table(table, path)
    return path


def test_changed_rows_flag_changed_features(tmp_path):
    previous = {
        "unchanged": (1.0, None),
        "one_changed": (1.0, 2.0),
        "revived": (None, None),
        "leaves": (3.0, 4.0),
        "still_expired": (None, None),
        "left_earlier": (5.0, 6.0),
    }
    current = {
        "unchanged": (1.0, None),
        "one_changed": (1.5, 2.0),
        "new": (7.0, None),
        "revived": (8.0, None),
        "leaves": (None, None),
        "still_expired": (None, None),
    }
    table = changed_rows(_partition(tmp_path / "current.parquet", current), _partition(tmp_path / "previous.parquet", previous), ["user_id"], ["f_a", "f_b"])
    flags = {
        user: (a, b)
        for user, a, b in zip(
            table.column("user_id").to_pylist(),
            table.column(changed_column("f_a")).to_pylist(),
            table.column(changed_column("f_b")).to_pylist(),
        )
    }
    assert flags == {
        "one_changed": (True, False),
        "new": (True, True),
        "revived": (True, True),
        "leaves": (True, True),
    }
