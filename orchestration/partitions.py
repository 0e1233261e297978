"""Daily partitions of freshrank assets, and the mappings between them."""

from __future__ import annotations

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

from freshrank.config import Settings
from freshrank.increments import landed_days

FALLBACK_LOOKBACK_DAYS = 30


def first_partition_day(settings: Settings) -> date:
    """Return the first partition: ``start_day`` if set, else the oldest landed day, else 30 days ago."""
    if settings.start_day is not None:
        return settings.start_day
    days = landed_days(settings.landing_dir)
    if days:
        return days[0]
    return date.today() - timedelta(days=FALLBACK_LOOKBACK_DAYS)


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """Event days in the business timezone; ``end_offset=1`` admits today's partial day."""
    return DailyPartitionsDefinition(
        start_date=first_partition_day(settings).isoformat(),
        timezone=settings.timezone,
        end_offset=1,
    )


def trailing_window(days: int) -> TimeWindowPartitionMapping:
    """Map a partition to itself and the ``days - 1`` partitions before it."""
    return TimeWindowPartitionMapping(start_offset=-(days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True)


def previous_day() -> TimeWindowPartitionMapping:
    """Map a partition to the one before it (the model chain, and features as of the day before)."""
    return TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)
