"""The DuckDB warehouse: one partition of ``events`` per event day, replaced atomically.

Publishing a day applies the cleaning rules and replaces the day's rows in ``events``
and ``returns`` and its row in ``partitions`` inside one transaction, so a failure at
any point leaves every partition as it was, and publishing the same increment twice
gives the same tables.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from freshrank.errors import IncrementError
from freshrank.faults import crash_point
from freshrank.increments import Increment, day_bounds, locate_row
from freshrank.schema import EVENT_TYPES

logger = logging.getLogger(__name__)

_EVENT_COLUMNS = """
    event_day DATE NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    user_id VARCHAR,
    item_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    quantity DOUBLE NOT NULL,
    price DOUBLE,
    category VARCHAR,
    session_id VARCHAR
"""

SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS events ({_EVENT_COLUMNS});
CREATE TABLE IF NOT EXISTS returns ({_EVENT_COLUMNS});
CREATE TABLE IF NOT EXISTS partitions (
    event_day DATE PRIMARY KEY,
    data_version VARCHAR NOT NULL,
    rows_in BIGINT NOT NULL,
    rows_published BIGINT NOT NULL,
    duplicates_dropped BIGINT NOT NULL,
    returns_set_aside BIGINT NOT NULL,
    rows_without_user BIGINT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL
);
"""


@dataclass(frozen=True)
class PublishReport:
    """Row counts of one published partition; every row in is published or counted as set aside."""

    day: str
    data_version: str
    rows_in: int
    rows_published: int
    duplicates_dropped: int
    returns_set_aside: int
    rows_without_user: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MemoryBound:
    """A DuckDB memory limit and the folder it spills to beyond it."""

    limit: str
    temp_dir: Path

    def apply(self, con) -> None:
        """Set the limit on a DuckDB connection (or an ibis DuckDB backend's ``raw_sql``)."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        execute = con.raw_sql if hasattr(con, "raw_sql") else con.execute
        execute(f"SET memory_limit = '{self.limit}'")
        execute(f"SET temp_directory = {sql_string(self.temp_dir)}")


def sql_identifier(name: str) -> str:
    """Return ``name`` quoted as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: object) -> str:
    """Return ``str(value)`` (a path, say) as a DuckDB string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def arrow_query(query: str, memory: MemoryBound | None = None):
    """Run ``query`` on a new in-memory DuckDB connection with a UTC session and return a ``pyarrow.Table``.

    ``memory`` bounds the connection; the query reads files (Parquet) rather than the warehouse.
    """
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        if memory is not None:
            memory.apply(connection)
        return connection.sql(query).to_arrow_table()
    finally:
        connection.close()


@contextmanager
def connect(path: Path, read_only: bool = False, memory: MemoryBound | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, creating its tables on first use; ``memory`` bounds the connection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        read_only = False
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if memory is not None:
            memory.apply(con)
        if not read_only:
            con.execute(SCHEMA_SQL)
        yield con
    finally:
        con.close()


def publish_increment(path: Path, increment: Increment, timezone_name: str) -> PublishReport:
    """Clean an increment and replace its day's partition in one transaction.

    Cleaning rules, each counted: exact duplicate rows are dropped; rows with a negative
    quantity (returns and cancellations) go to ``returns`` instead of ``events``; rows
    without a user id stay in ``events`` (they count for item features only). A quantity
    of 0 or none fits neither table, so it raises ``IncrementError`` like any other bad row.
    """
    frame = increment.frame
    _check_inside_day(increment, ZoneInfo(timezone_name))
    _check_event_types(increment)
    _check_quantities(increment)
    day = increment.day
    with connect(path) as con:
        con.register("increment_rows", frame)
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM events WHERE event_day = ?", [day])
            con.execute("DELETE FROM returns WHERE event_day = ?", [day])
            crash_point("warehouse.after_delete")
            con.execute(
                "CREATE OR REPLACE TEMP TABLE clean_rows AS SELECT DISTINCT ?::DATE AS event_day, * FROM increment_rows",
                [day],
            )
            con.execute("INSERT INTO events SELECT * FROM clean_rows WHERE quantity > 0")
            con.execute("INSERT INTO returns SELECT * FROM clean_rows WHERE quantity < 0")
            counts = con.execute(
                """
                SELECT count(*) FILTER (quantity > 0),
                       count(*) FILTER (quantity < 0),
                       count(*) FILTER (quantity > 0 AND user_id IS NULL),
                       count(*)
                FROM clean_rows
                """
            ).fetchone()
            published, returns, without_user, distinct = (int(value) for value in counts)
            report = PublishReport(
                day=day.isoformat(),
                data_version=increment.data_version,
                rows_in=len(frame),
                rows_published=published,
                duplicates_dropped=len(frame) - distinct,
                returns_set_aside=returns,
                rows_without_user=without_user,
            )
            con.execute("DELETE FROM partitions WHERE event_day = ?", [day])
            con.execute(
                "INSERT INTO partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    day,
                    report.data_version,
                    report.rows_in,
                    report.rows_published,
                    report.duplicates_dropped,
                    report.returns_set_aside,
                    report.rows_without_user,
                    datetime.now(timezone.utc),
                ],
            )
            con.execute("DROP TABLE clean_rows")
            crash_point("warehouse.before_commit")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("increment_rows")
    logger.info("published partition %s: %s", day, report)
    return report


def _check_inside_day(increment: Increment, zone: ZoneInfo) -> None:
    start, end = day_bounds(increment.day, zone)
    times = increment.frame["event_time"]
    outside = (times < pd.Timestamp(start)) | (times >= pd.Timestamp(end))
    if outside.any():
        row = int(outside.to_numpy().nonzero()[0][0])
        path, line = locate_row(increment, row)
        raise IncrementError(
            path,
            f"{int(outside.sum())} event(s) fall outside {increment.day} in {zone.key}, "
            f"the first at row {line} with event_time {times.iloc[row]}",
            "Move those events to the folder of their own day, or set the business timezone "
            "(`timezone` in freshrank.yaml) to the zone the shop's days are counted in.",
        )


def _check_event_types(increment: Increment) -> None:
    unknown = ~increment.frame["event_type"].isin(EVENT_TYPES)
    if unknown.any():
        row = int(unknown.to_numpy().nonzero()[0][0])
        path, line = locate_row(increment, row)
        raise IncrementError(
            path,
            f"row {line}: event_type {increment.frame['event_type'].iloc[row]!r} is not one of {', '.join(EVENT_TYPES)}",
            "Map the shop's event names to the canonical ones (an importer does this for known formats).",
        )


def _check_quantities(increment: Increment) -> None:
    quantity = increment.frame["quantity"]
    invalid = quantity.isna() | (quantity == 0)
    if invalid.any():
        row = int(invalid.to_numpy().nonzero()[0][0])
        path, line = locate_row(increment, row)
        value = quantity.iloc[row]
        quantity_text = "missing" if pd.isna(value) else f"{float(value):g}"
        raise IncrementError(
            path,
            f"row {line}: quantity is {quantity_text}; it must be positive, or negative for a return",
            "Drop the row at the source or give its quantity; an empty quantity in the file means 1.",
        )


def partition_rows(path: Path) -> pd.DataFrame:
    """Return the ``partitions`` table: one row per published day with its counts and data version."""
    with connect(path) as con:
        return con.execute("SELECT * FROM partitions ORDER BY event_day").df()


def published_rows(path: Path, day: date) -> int | None:
    """Return the events published for ``day``, or None when the day has no partition."""
    if not path.exists():
        return None
    with connect(path, read_only=True) as con:
        row = con.execute("SELECT rows_published FROM partitions WHERE event_day = ?", [day]).fetchone()
    return None if row is None else int(row[0])


def published_row_counts(path: Path, before: date, days: int) -> list[int]:
    """Return the row counts of up to ``days`` published partitions before ``before``, oldest first."""
    if not path.exists():
        return []
    with connect(path) as con:
        rows = con.execute(
            "SELECT rows_in FROM partitions WHERE event_day < ? ORDER BY event_day DESC LIMIT ?",
            [before, days],
        ).fetchall()
    return [int(row[0]) for row in reversed(rows)]


def read_events(path: Path, first: date, last: date) -> pd.DataFrame:
    """Return the published events of the days ``first`` .. ``last`` inclusive."""
    with connect(path) as con:
        return con.execute(
            "SELECT * FROM events WHERE event_day BETWEEN ? AND ? ORDER BY event_time",
            [first, last],
        ).df()
