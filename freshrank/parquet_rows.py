"""Rows of a Parquet file at given positions, read one row group at a time.

A sample of a large partition needs only the row groups its positions fall in, and only
one of them is held in memory at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def sample_positions(total: int, size: int, seed: int) -> np.ndarray:
    """Return the positions ``DataFrame.sample(n=size, random_state=seed)`` draws from ``total`` rows."""
    return np.random.RandomState(seed).choice(total, size=min(size, total), replace=False)


def read_positions(path: Path, positions: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """Return ``columns`` of the rows of ``path`` at ``positions`` (from 0), in the order of ``positions``.

    Raises:
        IndexError: A position is negative or beyond the file's rows.
    """
    file = pq.ParquetFile(path)
    positions = np.asarray(positions, dtype=np.int64)
    total = file.metadata.num_rows
    if len(positions) and (positions.min() < 0 or positions.max() >= total):
        raise IndexError(f"{path}: row positions must lie in [0, {total}), got {positions.min()} .. {positions.max()}")
    sizes = [file.metadata.row_group(group).num_rows for group in range(file.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups = np.searchsorted(starts, positions, side="right") - 1
    pieces, order = [], []
    for group in np.unique(groups):
        inside = np.flatnonzero(groups == group)
        rows = file.read_row_group(int(group), columns=columns)
        pieces.append(rows.take(positions[inside] - starts[group]))
        order.append(inside)
    if not pieces:
        return file.schema_arrow.empty_table().select(columns) if columns else file.schema_arrow.empty_table()
    drawn = pa.concat_tables(pieces)
    # ``drawn`` has the rows group by group. Put them back in the order of ``positions``.
    return drawn.take(np.argsort(np.concatenate(order), kind="stable"))
