"""Partitions of the long-window views from the day before: add the new day, subtract the day that left.

The user x item and user x category views aggregate ``features.user_item_window_days``
(90 by default), and aggregating every event of that window again reads 90 days to write
one. Their features are decomposable by day, so partition ``d`` follows from partition
``d - 1`` and two days of events:

* the view, cart and purchase counts and the purchase days add the day ``d`` and subtract
  the day ``d - window``, which left the window;
* the last event time is the later of the kept and the new one. It cannot belong to the day
  that left while the row has an event in the window, because that event would be later.
  A user x item pair whose counts reach zero leaves. The last purchase time is kept while
  the pair has a purchase in the window, by the same argument;
* a user x category row stores no count of its carts, so it stays while its last event is
  later than the day that left (validation keeps every event time inside its day);
* a user's share of purchases in a category divides by all the user's purchases in the
  window, including those without a category. Only users with events on day ``d`` or on
  the day that left can have a new total, and only their totals are counted again, over
  the window's purchases.

Counts are whole numbers stored as DOUBLE and times are the same DOUBLE values, so the
result equals the full aggregation exactly; ``tests/test_window_update.py`` compares them.
The full query runs instead when partition ``d - 1`` is missing or has other columns.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq

from freshrank.config import FeatureConfig
from freshrank.features import epoch_us
from freshrank.increments import day_bounds
from freshrank.warehouse import sql_string

VIEW = "user_item_features"
CATEGORY_VIEW = "user_category_features"


def update_sql(view: str, day: date, config: FeatureConfig, previous: Path, zone: ZoneInfo) -> str | None:
    """Return the SQL of ``view``'s partition of ``day`` from ``previous``, the partition of the day before.

    Returns None for a view without such an update, or when ``previous`` has other columns.
    """
    if view == VIEW:
        return user_item_update_sql(day, config, previous)
    if view == CATEGORY_VIEW:
        return user_category_update_sql(day, config, previous, zone)
    return None


def user_item_update_sql(day: date, config: FeatureConfig, previous: Path) -> str | None:
    """Return the SQL of ``day``'s user x item partition from ``previous``, the partition of the day before.

    Args:
        day: The partition day.
        config: Feature settings (the window length).
        previous: The user x item partition of ``day - 1``.

    Returns:
        The query, or None when ``previous`` has other columns (another window or version).
    """
    window = config.user_item_window_days
    counts = {
        f"ui_views_{window}d": "count(*) FILTER (event_type = 'view')",
        f"ui_carts_{window}d": "count(*) FILTER (event_type = 'add_to_cart')",
        f"ui_purchases_{window}d": "count(*) FILTER (event_type = 'purchase')",
        f"ui_purchase_days_{window}d": "count(DISTINCT event_day) FILTER (event_type = 'purchase')",
    }
    recency = ["ui_last_event_epoch_us", "ui_last_purchase_epoch_us"]
    expected = ["user_id", "item_id", "event_timestamp", *counts, *recency, "created_timestamp"]
    if pq.read_schema(previous).names != expected:
        return None
    aggregates = ",\n            ".join(f"{expression}::DOUBLE AS {name}" for name, expression in counts.items())
    per_day = f"""
        SELECT user_id, item_id,
            {aggregates},
            epoch_us(max(event_time))::DOUBLE AS ui_last_event_epoch_us,
            epoch_us(max(event_time) FILTER (event_type = 'purchase'))::DOUBLE AS ui_last_purchase_epoch_us
        FROM events WHERE event_day = DATE '{{day}}' AND user_id IS NOT NULL
        GROUP BY user_id, item_id"""
    sums = ",\n        ".join(
        f"coalesce(k.{name}, 0) + coalesce(a.{name}, 0) - coalesce(s.{name}, 0) AS {name}" for name in counts
    )
    purchases = f"ui_purchases_{window}d"
    total = " + ".join(list(counts)[:3])
    return f"""
    WITH kept AS (
        SELECT * FROM read_parquet({sql_string(previous)}) WHERE ui_last_event_epoch_us IS NOT NULL
    ),
    added AS ({per_day.format(day=day.isoformat())}),
    subtracted AS ({per_day.format(day=(day - timedelta(days=window)).isoformat())}),
    merged AS (
        SELECT user_id, item_id,
        {sums},
        greatest(k.ui_last_event_epoch_us, a.ui_last_event_epoch_us) AS ui_last_event_epoch_us,
        greatest(k.ui_last_purchase_epoch_us, a.ui_last_purchase_epoch_us) AS ui_last_purchase_epoch_us
        FROM kept k
        FULL OUTER JOIN added a USING (user_id, item_id)
        FULL OUTER JOIN subtracted s USING (user_id, item_id)
    )
    SELECT user_id, item_id, $as_of::TIMESTAMPTZ AS event_timestamp,
        {", ".join(counts)},
        ui_last_event_epoch_us,
        CASE WHEN {purchases} > 0 THEN ui_last_purchase_epoch_us END AS ui_last_purchase_epoch_us
    FROM merged
    WHERE {total} > 0
    """


def user_category_update_sql(day: date, config: FeatureConfig, previous: Path, zone: ZoneInfo) -> str | None:
    """Return the SQL of ``day``'s user x category partition from ``previous``, the partition of the day before.

    Args:
        day: The partition day.
        config: Feature settings (the window length).
        previous: The user x category partition of ``day - 1``.
        zone: The business timezone, in which the first day of the window begins.

    Returns:
        The query, or None when ``previous`` has other columns (another window or version).
    """
    window = config.user_item_window_days
    views, purchases, share = f"uc_views_{window}d", f"uc_purchases_{window}d", f"uc_purchase_share_{window}d"
    expected = ["user_id", "category", "event_timestamp", views, purchases, share, "uc_last_event_epoch_us", "created_timestamp"]
    if pq.read_schema(previous).names != expected:
        return None
    first = day - timedelta(days=window - 1)
    left = day - timedelta(days=window)
    first_start, _ = day_bounds(first, zone)
    per_day = f"""
        SELECT user_id, category,
            count(*) FILTER (event_type = 'view') AS {views},
            count(*) FILTER (event_type = 'purchase') AS {purchases},
            epoch_us(max(event_time))::DOUBLE AS uc_last_event_epoch_us
        FROM events WHERE event_day = DATE '{{day}}' AND user_id IS NOT NULL AND category IS NOT NULL
        GROUP BY user_id, category"""
    return f"""
    WITH kept AS (
        SELECT * FROM read_parquet({sql_string(previous)}) WHERE uc_last_event_epoch_us IS NOT NULL
    ),
    added AS ({per_day.format(day=day.isoformat())}),
    subtracted AS ({per_day.format(day=left.isoformat())}),
    touched AS (
        SELECT DISTINCT user_id FROM events
        WHERE event_day IN (DATE '{day}', DATE '{left}') AND user_id IS NOT NULL
    ),
    totals AS (
        SELECT user_id, count(*) AS purchases FROM events
        WHERE event_day BETWEEN DATE '{first}' AND DATE '{day}' AND event_type = 'purchase'
          AND user_id IN (SELECT user_id FROM touched)
        GROUP BY user_id
    ),
    merged AS (
        SELECT user_id, category,
            coalesce(k.{views}, 0) + coalesce(a.{views}, 0) - coalesce(s.{views}, 0) AS {views},
            coalesce(k.{purchases}, 0) + coalesce(a.{purchases}, 0) - coalesce(s.{purchases}, 0) AS {purchases},
            k.{share} AS kept_share,
            greatest(k.uc_last_event_epoch_us, a.uc_last_event_epoch_us) AS uc_last_event_epoch_us,
            a.user_id IS NOT NULL OR k.uc_last_event_epoch_us >= {epoch_us(first_start)!r} AS in_window
        FROM kept k
        FULL OUTER JOIN added a USING (user_id, category)
        FULL OUTER JOIN subtracted s USING (user_id, category)
    )
    SELECT m.user_id, m.category, $as_of::TIMESTAMPTZ AS event_timestamp,
        m.{views}::DOUBLE AS {views},
        m.{purchases}::DOUBLE AS {purchases},
        CASE WHEN m.user_id IN (SELECT user_id FROM touched)
             THEN (m.{purchases} / nullif(t.purchases, 0))::DOUBLE
             ELSE m.kept_share END AS {share},
        m.uc_last_event_epoch_us
    FROM merged m LEFT JOIN totals t USING (user_id)
    WHERE m.in_window
    """

