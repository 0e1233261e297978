"""The alert sensor: failed asset checks and drift over the threshold become alerts.

The sensor reads the Dagster event log after its cursor, so every check evaluation and
drift materialization is looked at once. Alerts carry keys: a failure of
``check_increment_valid`` gets the same key as the alert ``validate_staged`` raised for the
quarantined version, and a drift alert the key of ``drift_alert_key``, so the log holds each
alert once however many times the sensor, a rerun or the asset itself reports it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    EventRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from freshrank.alerts import CHECK_FAILED, DATA_QUALITY, DRIFT, drift_alert_key, quarantine_alert_key, raise_alert
from freshrank.config import Settings, load_settings

logger = logging.getLogger(__name__)

ALERT_SENSOR = "alert_sensor"
INCREMENT_CHECK = ("increment", "check_increment_valid")
"""Asset and name of the blocking validation check, whose failures are data-quality alerts."""
DRIFT_ASSET = "prediction_drift"
EVENTS_PER_TICK = 500
"""Most check evaluations and drift materializations read per tick; the rest wait for the next one."""
_TEXT_METADATA_CHARACTERS = 500


@dataclass
class AlertCursor:
    """Storage ids of the last check evaluation and the last drift materialization looked at."""

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
        raised = scan_for_alerts(load_settings(settings.home), context.instance, cursor)
        context.update_cursor(cursor.serialize())
        if not raised:
            return SkipReason("no new failed check or drift over threshold")
        return SkipReason(f"raised {len(raised)} alert(s): {', '.join(sorted({alert['kind'] for alert in raised}))}")

    return alert_sensor


def scan_for_alerts(settings: Settings, instance: DagsterInstance, cursor: AlertCursor) -> list[dict]:
    """Raise alerts for the events after ``cursor`` and move the cursor past them.

    Returns:
        The alert records of this scan, earlier records included when their key was already taken.
    """
    return _scan_checks(settings, instance, cursor) + _scan_drift(settings, instance, cursor)


def _scan_checks(settings: Settings, instance: DagsterInstance, cursor: AlertCursor) -> list[dict]:
    records = instance.event_log_storage.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor.checks),
        limit=EVENTS_PER_TICK,
        ascending=True,
    )
    raised = []
    for record in records:
        cursor.checks = max(cursor.checks, record.storage_id)
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            raised.append(_alert_for_check(settings, evaluation, record.run_id))
    return raised


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
                f"drift share {share} over threshold {threshold} on {day} (model {model})",
                {"model_version": model, "drift_share": share, "threshold": threshold, "report": metadata.get("report")},
                key=drift_alert_key(day, model if isinstance(model, str) else None),
            )
        )
    return raised


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
