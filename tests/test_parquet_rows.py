"""Rows read at positions equal the same rows rows from the whole file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freshrank.parquet_rows import read_positions, sample_positions

ROWS = 50


@pytest.fixture
def parquet_file(tmp_path):
    table = pa.table({"key": [f"k{n}" for n in range(ROWS)], "value": np.arange(ROWS, dtype="float64") / 7})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=6)
    assert pq.ParquetFile(path).num_row_groups == 9
    return path


def test_positions_across_row_groups(parquet_file):
    positions = np.array([49, 0, 13, 12, 5, 6, 48, 30])
    rows = read_positions(parquet_file, positions)
    assert rows.equals(pq.read_table(parquet_file).take(positions))


def test_selected_columns(parquet_file):
    rows = read_positions(parquet_file, np.array([7, 3]), columns=["key"])
    assert rows.column_names == ["key"]
    assert rows.column("key").to_pylist() == ["k7", "k3"]


def test_no_positions(parquet_file):
    rows = read_positions(parquet_file, np.array([], dtype=np.int64))
    assert rows.num_rows == 0
    assert rows.schema == pq.read_schema(parquet_file)


def test_position_beyond_rows(parquet_file):
    with pytest.raises(IndexError, match=r"rows.parquet: row positions must lie in \[0, 50\)"):
        read_positions(parquet_file, np.array([3, ROWS]))


def test_sample_positions_like_pandas(parquet_file):
    frame = pq.read_table(parquet_file).to_pandas()
    expected = frame.sample(n=10, random_state=4)
    positions = sample_positions(ROWS, 10, seed=4)
    pd.testing.assert_frame_equal(read_positions(parquet_file, positions).to_pandas().set_axis(positions), expected)


def test_sample_larger_than_rows(parquet_file):
    positions = sample_positions(ROWS, 80, seed=1)
    assert sorted(positions) == list(range(ROWS))
