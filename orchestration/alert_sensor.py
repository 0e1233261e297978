"""The alert sensor: failed asset checks and drift over the threshold become alerts.

The sensor reads the asset check executions and the ``prediction_drift`` materializations
recorded after its cursor. Alerts carry keys: a failure of ``check_increment_valid`` gets the
same key as the alert ``validate_staged`` raised for the quarantined version, and a drift
alert the key of ``drift_alert_key``, so the log contains each alert once however many times the
sensor, a rerun or the asset itself reports it. That also makes it safe to look at an
execution twice, which the cursor allows for a check still running at the last tick.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from freshrank.alerts import CHECK_FAILED, DATA_QUALITY, DRIFT, drift_alert_key, quarantine_alert_key, raise_alert
from freshrank.config import Settings, load_settings

logger = logging.getLogger(__name__)

ALERT_SENSOR = "alert_sensor"
INCREMENT_CHECK = ("increment", "check_increment_valid")
"""Asset and name of the blocking validation check, whose failures are data-quality alerts."""
DRIFT_ASSET = "prediction_drift"
EVENTS_PER_TICK = 500
"""Most drift materializations read per tick, and the page size of check executions."""
ABANDONED_CHECK_SECONDS = 86400.0
"""Age after which a check execution still planned, in a run that never finished, is passed over."""
_TEXT_METADATA_CHARACTERS = 500


def _increment_check_key() -> AssetCheckKey:
    return AssetCheckKey(AssetKey(INCREMENT_CHECK[0]), INCREMENT_CHECK[1])


@dataclass
class AlertCursor:
    """Ids up to which check executions and drift materializations were looked at.

    ``checks`` is an id of Dagster's asset check execution table: executions up to it are
    finished (or abandoned), and those after it are read again at the next tick.
    """

    checks: int = 0
    drift: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "AlertCursor":
        if not text:
            return cls()
        values = json.loads(text)
        return cls(checks=int(values.get("checks", 0)), drift=int(values.get("drift", 0)))

    def serialize(self) -> str:
        return json.dumps({"checks": self.checks, "drift": self.drift})


def build_alert_sensor(settings: Settings) -> SensorDefinition:
    """Build the sensor that raises an alert for each failed asset check and each drift over threshold."""

    @sensor(
        name=ALERT_SENSOR,
        minimum_interval_seconds=settings.orchestration.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Raises an alert (alerts.jsonl and the webhook) for each failed asset check and each drift over threshold.",
    )
    def alert_sensor(context: SensorEvaluationContext) -> SkipReason:
        cursor = AlertCursor.parse(context.cursor)
        repository = context.repository_def
        check_keys = repository.asset_graph.asset_check_keys if repository is not None else None
        raised = scan_for_alerts(load_settings(settings.home), context.instance, cursor, check_keys)
        context.update_cursor(cursor.serialize())
        if not raised:
            return SkipReason("no new failed check or drift over threshold")
        return SkipReason(f"raised {len(raised)} alert(s): {', '.join(sorted({alert['kind'] for alert in raised}))}")

    return alert_sensor


def scan_for_alerts(
    settings: Settings,
    instance: DagsterInstance,
    cursor: AlertCursor,
    check_keys: Iterable[AssetCheckKey] | None = None,
) -> list[dict]:
    """Raise alerts for the check executions and drift materializations after ``cursor``, and move it.

    Args:
        settings: Settings of the home whose alerts log receives the alerts.
        instance: The Dagster instance whose records are read.
        cursor: Where the last scan stopped; updated in place.
        check_keys: The asset checks to look at; default the increment validation check.

    Returns:
        The alert records of this scan, earlier records included when their key was already taken.
    """
    keys = list(check_keys) if check_keys is not None else [_increment_check_key()]
    return _scan_checks(settings, instance, cursor, keys) + _scan_drift(settings, instance, cursor)


def _scan_checks(
    settings: Settings, instance: DagsterInstance, cursor: AlertCursor, check_keys: list[AssetCheckKey]
) -> list[dict]:
    raised = []
    newest_done = cursor.checks
    oldest_open: int | None = None
    for key in sorted(check_keys, key=lambda item: item.to_user_string()):
        for record in _executions_after(instance, key, cursor.checks):
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                if not _abandoned(instance, record):
                    oldest_open = record.id if oldest_open is None else min(oldest_open, record.id)
                    continue
                raised.append(_alert_for_unfinished_check(settings, record))
            elif record.status == AssetCheckExecutionRecordStatus.FAILED:
                raised.append(_alert_for_check(settings, record.event.dagster_event.event_specific_data, record.run_id))
            newest_done = max(newest_done, record.id)
    # Stop before the oldest execution still running, so its outcome is read at a later tick.
    cursor.checks = newest_done if oldest_open is None else min(newest_done, oldest_open - 1)
    return raised


def _executions_after(instance: DagsterInstance, key: AssetCheckKey, after_id: int) -> list[AssetCheckExecutionRecord]:
    """Return the executions of one check with an id above ``after_id``, oldest first."""
    found: list[AssetCheckExecutionRecord] = []
    page_cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(key, limit=EVENTS_PER_TICK, cursor=page_cursor)
        newer = [record for record in page if record.id > after_id]
        found.extend(newer)
        if len(page) < EVENTS_PER_TICK or len(newer) < len(page):
            break
        page_cursor = page[-1].id
    return sorted(found, key=lambda record: record.id)


def _abandoned(instance: DagsterInstance, record: AssetCheckExecutionRecord) -> bool:
    """Whether a planned execution will never finish: its run ended, or it is older than a day."""
    run = instance.get_run_by_id(record.run_id)
    if run is not None and run.is_finished:
        return True
    return time.time() - record.create_timestamp > ABANDONED_CHECK_SECONDS


def _alert_for_unfinished_check(settings: Settings, record: AssetCheckExecutionRecord) -> dict:
    asset, check = record.key.asset_key.to_user_string(), record.key.name
    partition = record.partition or "unpartitioned"
    return raise_alert(
        settings,
        CHECK_FAILED,
        partition,
        f"asset check {asset}:{check} did not complete for {partition}: its step failed or its run was "
        f"interrupted (run {record.run_id}); see the run's logs",
        {"asset": asset, "check": check, "run_id": record.run_id},
        key=f"{CHECK_FAILED}:{asset}:{check}:{partition}:{record.run_id}",
    )


def _alert_for_check(settings: Settings, evaluation, run_id: str) -> dict:
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition or "unpartitioned"
    metadata = _plain_metadata(evaluation.metadata)
    severity = getattr(evaluation.severity, "value", str(evaluation.severity))
    if (asset, evaluation.check_name) == INCREMENT_CHECK and metadata.get("data_version"):
        kind = DATA_QUALITY
        key = quarantine_alert_key(partition, str(metadata["data_version"]))
    else:
        kind = CHECK_FAILED
        key = f"{CHECK_FAILED}:{asset}:{evaluation.check_name}:{partition}:{run_id}"
    numbers = ", ".join(f"{name}={value}" for name, value in metadata.items() if isinstance(value, (int, float)))
    message = f"asset check {asset}:{evaluation.check_name} failed ({severity}) for {partition}"
    if numbers:
        message += f": {numbers}"
    details = {"asset": asset, "check": evaluation.check_name, "run_id": run_id, "severity": severity, "metadata": metadata}
    return raise_alert(settings, kind, partition, message, details, key=key)


def _scan_drift(settings: Settings, instance: DagsterInstance, cursor: AlertCursor) -> list[dict]:
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(DRIFT_ASSET), after_storage_id=cursor.drift),
        limit=EVENTS_PER_TICK,
        ascending=True,
    )
    raised = []
    for record in result.records:
        cursor.drift = max(cursor.drift, record.storage_id)
        materialization = record.asset_materialization
        metadata = _plain_metadata(materialization.metadata)
        share, threshold = metadata.get("drift_share"), metadata.get("threshold", settings.drift.drift_share_threshold)
        over = isinstance(share, (int, float)) and isinstance(threshold, (int, float)) and share > threshold
        if not (metadata.get("alert") is True or over):
            continue
        day = materialization.partition or "unpartitioned"
        model = metadata.get("model_version")
        raised.append(
            raise_alert(
                settings,
                DRIFT,
                day,
                f"drift share {_number(share)} over threshold {_number(threshold)} on {day} (model {model})",
                {"model_version": model, "drift_share": share, "threshold": threshold, "report": metadata.get("report")},
                key=drift_alert_key(day, model if isinstance(model, str) else None),
            )
        )
    return raised


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _plain_metadata(metadata) -> dict:
    """Turn Dagster metadata values into JSON-able values; Markdown and long text are left out."""
    plain = {}
    for name, value in (metadata or {}).items():
        raw = getattr(value, "value", value)
        if type(value).__name__ == "MarkdownMetadataValue":
            continue
        if isinstance(raw, str) and len(raw) > _TEXT_METADATA_CHARACTERS:
            continue
        if isinstance(raw, (bool, int, float, str)) or raw is None:
            plain[name] = raw
        elif isinstance(raw, (list, dict)):
            plain[name] = raw
        else:
            plain[name] = str(raw)
    return plain
