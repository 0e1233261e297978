"""The user x item partition of a day from the day before: add the new day, subtract the day that left.

Over a 90-day window, aggregating every event of the window again reads 90 days to write
one. Each user x item feature is decomposable by day, so partition ``d`` follows from
partition ``d - 1`` and two days of events:

* the view, cart and purchase counts and the purchase days add the day ``d`` and subtract
  the day ``d - window``, which left the window;
* the last event time is the later of the kept and the new one. It cannot belong to the day
  that left while the pair has an event in the window, because that event would be later.
  A pair whose counts reach zero leaves. The last purchase time is kept while the pair
  has a purchase in the window, by the same argument.

Counts are whole numbers stored as DOUBLE and times are the same DOUBLE values, so the
result equals the full aggregation exactly; ``tests/test_window_update.py`` compares them.
The full query runs instead when partition ``d - 1`` is missing or has other columns.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from freshrank.config import FeatureConfig
from freshrank.warehouse import sql_string

VIEW = "user_item_features"


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
