"""User, item, user x item and user x category features of one day, computed in DuckDB over trailing windows.

The features of day ``d`` describe behaviour up to the end of ``d`` and carry that instant
(one second before the next day starts in the business timezone) as their event
timestamp, so a training row for day ``d + 1`` joined point-in-time reads them and
nothing of ``d + 1`` itself. Each day is written as one Parquet file per feature view
under ``<offline>/<view>/<YYYY-MM-DD>.parquet``, the folder a Feast FileSource reads.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from freshrank.config import FeatureConfig
from freshrank.faults import crash_point
from freshrank.increments import day_bounds
from freshrank.warehouse import MemoryBound, connect, sql_string

logger = logging.getLogger(__name__)

FEATURE_VIEWS: tuple[str, ...] = ("user_features", "item_features", "user_item_features", "user_category_features")
ENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "user_features": ("user_id",),
    "item_features": ("item_id",),
    "user_item_features": ("user_id", "item_id"),
    "user_category_features": ("user_id", "category"),
}
TIMESTAMP_COLUMNS = ("event_timestamp", "created_timestamp")
EXACT_PRICE = "price::DECIMAL(38, 6)"
"""Price as a decimal of micro-units. A sum of doubles depends on the order of its terms, and
the warehouse's row order is not fixed. Decimal sums are exact, so a recomputed partition
equals the first to the last bit."""
EXACT_REVENUE = "(price * quantity)::DECIMAL(38, 6)"
"""Revenue of one event in micro-units, for the same reason."""
ATTRIBUTE_COLUMNS: dict[str, tuple[str, ...]] = {"item_features": ("category",)}
"""Per view, stored columns that are not features: ``category`` of an item is the key its
user x category features are looked up by, in training rows and at serving time."""
RECENCY_FEATURES: dict[str, dict[str, str]] = {
    "user_features": {
        "u_last_event_epoch_us": "u_days_since_last_event",
        "u_last_purchase_epoch_us": "u_days_since_last_purchase",
    },
    "item_features": {
        "i_last_event_epoch_us": "i_days_since_last_event",
        "i_last_purchase_epoch_us": "i_days_since_last_purchase",
    },
    "user_item_features": {
        "ui_last_event_epoch_us": "ui_days_since_last_event",
        "ui_last_purchase_epoch_us": "ui_days_since_last_purchase",
    },
    "user_category_features": {"uc_last_event_epoch_us": "uc_days_since_last_event"},
}
"""Per view, each stored last-event time column and the model feature derived from it.

The views store when the last event happened (Unix epoch microseconds as DOUBLE, exact
below 2**53) rather than how long ago, so a row changes only when the entity's behaviour
does and a day's online write can skip unchanged rows. ``with_days_since`` derives the
model's ``*_days_since_*`` features from them when features are read.
"""

RECENCY_COLUMNS: dict[str, str] = {
    "user_features": "u_last_event_epoch_us",
    "item_features": "i_last_event_epoch_us",
    "user_item_features": "ui_last_event_epoch_us",
    "user_category_features": "uc_last_event_epoch_us",
}
"""Per view, a column that is never null for an entity with events in the window."""

SECONDS_PER_DAY = 86400.0
_MICROSECONDS_PER_DAY = 86_400_000_000.0
_EVENT_TYPE_NAMES = {"view": "views", "add_to_cart": "carts", "purchase": "purchases"}


@dataclass(frozen=True)
class FeaturePartition:
    """One feature view's Parquet file for one day."""

    view: str
    day: str
    path: Path
    rows: int


def view_window_days(view: str, config: FeatureConfig) -> int:
    """Return the longest window of a view, in days: its Feast ttl, and how far back its partitions reach."""
    if view in ("user_item_features", "user_category_features"):
        return config.user_item_window_days
    return max(config.windows_days)


def feature_timestamp(day: date, zone: ZoneInfo) -> datetime:
    """Return the event timestamp of day ``day``'s features: the last second of the day."""
    _, end = day_bounds(day, zone)
    return end - timedelta(seconds=1)


def _window_counts(prefix: str, windows: tuple[int, ...], day: date) -> list[str]:
    columns = []
    for window in windows:
        first = day - timedelta(days=window - 1)
        for event_type, name in _EVENT_TYPE_NAMES.items():
            columns.append(
                f"(count(*) FILTER (event_type = '{event_type}' AND event_day >= DATE '{first}'))::DOUBLE "
                f"AS {prefix}_{name}_{window}d"
            )
    return columns


def user_features_sql(day: date, config: FeatureConfig) -> str:
    """Return the SQL of the user features of ``day``; ``$as_of`` is the feature timestamp."""
    long = max(config.windows_days)
    first = day - timedelta(days=long - 1)
    counts = ",\n        ".join(_window_counts("u", config.windows_days, day))
    return f"""
    WITH window_events AS (
        SELECT * FROM events
        WHERE event_day BETWEEN DATE '{first}' AND DATE '{day}' AND user_id IS NOT NULL
    ),
    category_share AS (
        SELECT user_id, max(n) / sum(n) AS top_share
        FROM (SELECT user_id, category, count(*) AS n FROM window_events
              WHERE category IS NOT NULL GROUP BY user_id, category)
        GROUP BY user_id
    )
    SELECT
        w.user_id,
        $as_of::TIMESTAMPTZ AS event_timestamp,
        {counts},
        coalesce(sum({EXACT_REVENUE}) FILTER (event_type = 'purchase'), 0)::DOUBLE AS u_revenue_{long}d,
        (count(*) FILTER (event_type = 'purchase'))
            / nullif(count(*) FILTER (event_type = 'view'), 0)::DOUBLE AS u_view_conversion_{long}d,
        count(DISTINCT item_id)::DOUBLE AS u_distinct_items_{long}d,
        count(DISTINCT event_day)::DOUBLE AS u_active_days_{long}d,
        avg({EXACT_PRICE})::DOUBLE AS u_avg_price_{long}d,
        epoch_us(max(event_time))::DOUBLE AS u_last_event_epoch_us,
        epoch_us(max(event_time) FILTER (event_type = 'purchase'))::DOUBLE AS u_last_purchase_epoch_us,
        any_value(c.top_share)::DOUBLE AS u_top_category_share_{long}d
    FROM window_events w LEFT JOIN category_share c USING (user_id)
    GROUP BY w.user_id
    """


def item_features_sql(day: date, config: FeatureConfig) -> str:
    """Return the SQL of the item features of ``day``; rows without a user id count here too."""
    long = max(config.windows_days)
    first = day - timedelta(days=long - 1)
    week_first = day - timedelta(days=6)
    counts = ",\n        ".join(_window_counts("i", config.windows_days, day))
    return f"""
    SELECT
        item_id,
        $as_of::TIMESTAMPTZ AS event_timestamp,
        {counts},
        count(DISTINCT user_id) FILTER (event_day >= DATE '{week_first}')::DOUBLE AS i_distinct_users_7d,
        epoch_us(max(event_time))::DOUBLE AS i_last_event_epoch_us,
        count(DISTINCT user_id)::DOUBLE AS i_distinct_users_{long}d,
        coalesce(sum({EXACT_REVENUE}) FILTER (event_type = 'purchase'), 0)::DOUBLE AS i_revenue_{long}d,
        (count(*) FILTER (event_type = 'purchase'))
            / nullif(count(*) FILTER (event_type = 'view'), 0)::DOUBLE AS i_view_conversion_{long}d,
        median(price)::DOUBLE AS i_price,
        -- the latest category; of two at the same instant, the greater, whatever the row order
        arg_max(category, (event_time, category)) FILTER (category IS NOT NULL) AS category,
        epoch_us(max(event_time) FILTER (event_type = 'purchase'))::DOUBLE AS i_last_purchase_epoch_us,
        (count(*) FILTER (event_type = 'purchase' AND event_day >= DATE '{week_first}')) * ({long} / 7.0)
            / nullif(count(*) FILTER (event_type = 'purchase'), 0)::DOUBLE AS i_purchase_trend
    FROM events
    WHERE event_day BETWEEN DATE '{first}' AND DATE '{day}'
    GROUP BY item_id
    """


def user_item_features_sql(day: date, config: FeatureConfig) -> str:
    """Return the SQL of the user x item history of ``day``."""
    window = config.user_item_window_days
    first = day - timedelta(days=window - 1)
    return f"""
    SELECT
        user_id, item_id,
        $as_of::TIMESTAMPTZ AS event_timestamp,
        count(*) FILTER (event_type = 'view')::DOUBLE AS ui_views_{window}d,
        count(*) FILTER (event_type = 'add_to_cart')::DOUBLE AS ui_carts_{window}d,
        count(*) FILTER (event_type = 'purchase')::DOUBLE AS ui_purchases_{window}d,
        count(DISTINCT event_day) FILTER (event_type = 'purchase')::DOUBLE AS ui_purchase_days_{window}d,
        epoch_us(max(event_time))::DOUBLE AS ui_last_event_epoch_us,
        epoch_us(max(event_time) FILTER (event_type = 'purchase'))::DOUBLE AS ui_last_purchase_epoch_us
    FROM events
    WHERE event_day BETWEEN DATE '{first}' AND DATE '{day}' AND user_id IS NOT NULL
    GROUP BY user_id, item_id
    """


def user_category_features_sql(day: date, config: FeatureConfig) -> str:
    """Return the SQL of the user x category history of ``day``: each event counts for its own category.

    A view of its own, keyed by user and category, rather than columns of every user x item
    row: a user's new event in a category then changes one row, not one per item of the
    category the user touched in the window, which keeps the day's online write small.
    """
    window = config.user_item_window_days
    first = day - timedelta(days=window - 1)
    return f"""
    WITH window_events AS (
        SELECT user_id, category, event_type, event_time FROM events
        WHERE event_day BETWEEN DATE '{first}' AND DATE '{day}' AND user_id IS NOT NULL
    ),
    user_totals AS (
        SELECT user_id, count(*) FILTER (event_type = 'purchase') AS purchases
        FROM window_events GROUP BY user_id
    )
    SELECT
        w.user_id, w.category,
        $as_of::TIMESTAMPTZ AS event_timestamp,
        count(*) FILTER (w.event_type = 'view')::DOUBLE AS uc_views_{window}d,
        count(*) FILTER (w.event_type = 'purchase')::DOUBLE AS uc_purchases_{window}d,
        (count(*) FILTER (w.event_type = 'purchase') / nullif(any_value(t.purchases), 0))::DOUBLE
            AS uc_purchase_share_{window}d,
        epoch_us(max(w.event_time))::DOUBLE AS uc_last_event_epoch_us
    FROM window_events w JOIN user_totals t USING (user_id)
    WHERE w.category IS NOT NULL
    GROUP BY w.user_id, w.category
    """


_VIEW_SQL = {
    "user_features": user_features_sql,
    "item_features": item_features_sql,
    "user_item_features": user_item_features_sql,
    "user_category_features": user_category_features_sql,
}


def _view_sql(view: str, day: date, config: FeatureConfig, previous: Path | None, zone: ZoneInfo) -> str:
    """Return the query of a view's partition: from the day before where that is exact, else over the window."""
    if previous is not None and previous.stem == (day - timedelta(days=1)).isoformat():
        from freshrank.window_update import update_sql

        query = update_sql(view, day, config, previous, zone)
        if query is not None:
            return query
    return _VIEW_SQL[view](day, config)


def partition_path(offline_dir: Path, view: str, day: date) -> Path:
    """Return the Parquet file of one view's partition for ``day``."""
    return offline_dir / view / f"{day.isoformat()}.parquet"


def previous_partition(offline_dir: Path, view: str, day: date) -> Path | None:
    """Return the newest partition file of ``view`` older than ``day``, if any."""
    older = [path for path in (offline_dir / view).glob("*.parquet") if path.stem < day.isoformat()]
    return max(older) if older else None


def _with_expiry_rows(query: str, view: str, previous: Path | None) -> str:
    """Add an all-null row for each entity active in the previous partition but not in this one.

    Feast's point-in-time join and its online store both serve an entity's newest row, so
    without this row an entity that left every window would keep serving its last counts.
    """
    if previous is None:
        return query
    keys = ", ".join(ENTITY_KEYS[view])
    recency = RECENCY_COLUMNS[view]
    return f"""
    WITH current AS ({query})
    SELECT * FROM current
    UNION ALL BY NAME
    SELECT {keys}, $as_of::TIMESTAMPTZ AS event_timestamp
    FROM read_parquet({sql_string(previous)}) AS previous
    WHERE previous.{recency} IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM current WHERE {" AND ".join(f"current.{k} = previous.{k}" for k in ENTITY_KEYS[view])})
    """


def write_feature_partition(
    warehouse: Path,
    offline_dir: Path,
    view: str,
    day: date,
    config: FeatureConfig,
    zone: ZoneInfo,
    memory: MemoryBound | None = None,
) -> FeaturePartition:
    """Compute one view's features of ``day`` and replace its Parquet file atomically; ``memory`` bounds DuckDB."""
    target = partition_path(offline_dir, view, day)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    as_of = feature_timestamp(day, zone)
    previous = previous_partition(offline_dir, view, day)
    query = _with_expiry_rows(_view_sql(view, day, config, previous, zone), view, previous)
    with connect(warehouse, read_only=True, memory=memory) as con:
        con.execute(
            f"COPY (SELECT *, $as_of::TIMESTAMPTZ AS created_timestamp FROM ({query}) ORDER BY ALL) "
            f"TO {sql_string(temporary)} (FORMAT parquet, COMPRESSION zstd)",
            {"as_of": as_of},
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_string(temporary)})").fetchone()[0]
    crash_point("features.before_replace")
    os.replace(temporary, target)
    logger.info("wrote %s rows of %s for %s to %s", rows, view, day, target)
    return FeaturePartition(view=view, day=day.isoformat(), path=target, rows=int(rows))


def feature_columns(view: str, config: FeatureConfig) -> list[str]:
    """Return the feature columns of a view, read from its query's result schema.

    The schema is described once per process and settings: a DuckDB connection and a
    ``DESCRIBE`` take about 25 ms, and a training step reads the columns 16 times.
    """
    return list(_described_feature_columns(view, config.model_dump_json()))


@functools.lru_cache(maxsize=32)
def _described_feature_columns(view: str, config_json: str) -> tuple[str, ...]:
    import duckdb

    from freshrank.warehouse import SCHEMA_SQL

    config = FeatureConfig.model_validate_json(config_json)
    con = duckdb.connect()
    try:
        con.execute(SCHEMA_SQL)
        query = _VIEW_SQL[view](date(2000, 1, 1), config)
        described = con.execute(f"DESCRIBE ({query})", {"as_of": datetime(2000, 1, 2)}).fetchall()
    finally:
        con.close()
    skip = set(ENTITY_KEYS[view]) | set(TIMESTAMP_COLUMNS) | set(ATTRIBUTE_COLUMNS.get(view, ()))
    return tuple(row[0] for row in described if row[0] not in skip)


def model_feature_columns(view: str, config: FeatureConfig) -> list[str]:
    """Return the model's feature names of a view: its stored columns, recency columns renamed."""
    renames = RECENCY_FEATURES[view]
    return [renames.get(name, name) for name in feature_columns(view, config)]


def days_since(as_of_us: float | np.ndarray, last_event_us: float | np.ndarray) -> np.ndarray:
    """Return the days from ``last_event_us`` to ``as_of_us`` (both Unix epoch microseconds).

    The arithmetic repeats DuckDB's ``epoch(as_of - last_event) / 86400`` on a UTC session,
    which splits the interval into whole days and the microseconds left over, so the result
    is bit-identical to the SQL that computed these features before they were stored as
    timestamps. NaN (no such event) stays NaN.
    """
    elapsed = np.subtract(as_of_us, last_event_us, dtype="float64")
    remainder = np.fmod(elapsed, _MICROSECONDS_PER_DAY)
    whole_days = (elapsed - remainder) / _MICROSECONDS_PER_DAY
    return (whole_days * SECONDS_PER_DAY + remainder / 1e6) / SECONDS_PER_DAY


def epoch_us(instant: datetime | pd.Timestamp) -> float:
    """Return an aware instant as Unix epoch microseconds."""
    return float(pd.Timestamp(instant).value // 1000)


def feature_day_seen_at(instant: datetime | pd.Timestamp, zone: ZoneInfo) -> date:
    """Return the newest day whose features a point-in-time join at ``instant`` can read.

    Day ``d``'s features are stamped one second before ``d + 1`` starts, so they are visible
    from that second on: a label row stamped at the start of ``d`` reads day ``d - 1``.
    """
    later = pd.Timestamp(instant) + pd.Timedelta(seconds=1)
    return later.tz_convert(zone).date() - timedelta(days=1)


def with_days_since(frame: pd.DataFrame, as_of_us: float | np.ndarray | pd.Series) -> pd.DataFrame:
    """Replace every stored recency column of ``frame`` by its model feature, in the same position.

    Args:
        frame: Feature rows with any of the ``RECENCY_FEATURES`` columns; other columns pass.
        as_of_us: The feature timestamp the days count to, in Unix epoch microseconds, as
            one value or one per row. A training row of event day ``d`` counts to the feature
            timestamp of ``d - 1``, and serving counts to the newest day in the online store.

    Returns:
        A new frame with ``*_days_since_*`` columns where the ``*_epoch_us`` columns were.
    """
    renames = {stored: model for view in FEATURE_VIEWS for stored, model in RECENCY_FEATURES[view].items()}
    present = [name for name in frame.columns if name in renames]
    if not present:
        return frame
    as_of = np.asarray(as_of_us, dtype="float64")
    derived = frame.copy()
    for name in present:
        derived[name] = days_since(as_of, derived[name].to_numpy(dtype="float64"))
    return derived.rename(columns={name: renames[name] for name in present})
