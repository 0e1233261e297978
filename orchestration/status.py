"""Per-partition state for `freshrank status`: data versions, last computation, up to date or not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from dagster import AssetKey, DagsterInstance

from freshrank.config import Settings
from orchestration.changes import interrupted_days, landed_versions, recorded_version


@dataclass(frozen=True)
class PartitionState:
    """What freshrank knows about one landed day."""

    day: str
    landed_version: str
    recorded_version: str | None
    computed_at: str | None
    state: str


def _last_materialized_at(instance: DagsterInstance, asset: str, day: date) -> datetime | None:
    record = instance.get_latest_data_version_record(AssetKey(asset), is_source=False, partition_key=day.isoformat())
    if record is None:
        return None
    return datetime.fromtimestamp(record.timestamp, tz=timezone.utc)


def partition_states(settings: Settings, instance: DagsterInstance) -> list[PartitionState]:
    """Return the state of every landed day, oldest first.

    ``up to date``: the published events carry the landed version. ``interrupted``: they
    do, but a later run of the day did not finish, and `freshrank run` completes it.
    ``quarantined``: the landed version was staged and failed validation. ``new`` and
    ``changed``: the sensor or `freshrank run` will compute the day.
    """
    states = []
    versions = landed_versions(settings)
    interrupted = interrupted_days(settings, instance, landed=versions)
    for day, landed in versions.items():
        staged = recorded_version(instance, "increment", day)
        published = recorded_version(instance, "events", day)
        computed = _last_materialized_at(instance, "online_features", day)
        if published == landed and day in interrupted:
            state = "interrupted"
        elif published == landed:
            state = "up to date"
        elif staged == landed:
            state = "quarantined"
        elif staged is None:
            state = "new"
        else:
            state = "changed"
        states.append(
            PartitionState(day.isoformat(), landed, published, computed.isoformat(timespec="seconds") if computed else None, state)
        )
    return states
