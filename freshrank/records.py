"""Per-day JSON records of the pipeline stages under ``<home>/reports/<stage>/<day>.json``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from freshrank.config import Settings
from freshrank.staging import write_json_atomic


def record_path(settings: Settings, stage: str, day: date) -> Path:
    """Return the path of a stage's record for ``day``."""
    return settings.reports_dir / stage / f"{day.isoformat()}.json"


def write_record(settings: Settings, stage: str, day: date, payload: dict) -> Path:
    """Replace a stage's record for ``day`` atomically."""
    path = record_path(settings, stage, day)
    write_json_atomic(path, payload)
    return path


def read_record(settings: Settings, stage: str, day: date) -> dict | None:
    """Return a stage's record for ``day``, or None when the stage has not run for it."""
    path = record_path(settings, stage, day)
    if not path.exists():
        return None
    return json.loads(path.read_text())
