"""Data-quality and drift alerts, appended to ``<home>/alerts.jsonl``."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from freshrank.config import Settings

logger = logging.getLogger(__name__)

ALERTS_FILE = "alerts.jsonl"


def alerts_path(settings: Settings) -> Path:
    return settings.home / ALERTS_FILE


def raise_alert(settings: Settings, kind: str, day: str, message: str, details: dict | None = None) -> dict:
    """Append an alert record and log it; returns the record."""
    record = {
        "time": datetime.now(timezone.utc).isoformat(),
        "kind": kind,
        "day": day,
        "message": message,
        "details": details or {},
    }
    path = alerts_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
    logger.warning("%s alert for %s: %s", kind, day, message)
    return record


def read_alerts(settings: Settings) -> list[dict]:
    """Return all alerts, oldest first."""
    path = alerts_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
