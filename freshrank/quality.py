"""Validation of a staged increment: report, and on failure quarantine and alert."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from freshrank.alerts import raise_alert
from freshrank.config import Settings
from freshrank.staging import load_staged, quarantine_increment
from freshrank.validation import ValidationResult, validate_increment, write_validation_report
from freshrank.warehouse import published_row_counts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityOutcome:
    """A validation result with where its report and, on failure, the quarantined files went."""

    result: ValidationResult
    data_version: str
    report_paths: dict[str, Path]
    quarantine: Path | None


def validate_staged(settings: Settings, day: date) -> QualityOutcome:
    """Validate the staged increment of ``day``; a failure is quarantined and raises an alert."""
    increment = load_staged(settings, day)
    trailing = published_row_counts(settings.warehouse_path, day, settings.validation.volume_trailing_days)
    result = validate_increment(increment.frame, day, settings.timezone, settings.validation, trailing)
    folder = settings.reports_dir / "validation" / day.isoformat()
    report_paths = write_validation_report(result, folder)
    quarantine = None
    if not result.success:
        report = {**result.to_dict(), "data_version": increment.data_version}
        quarantine = quarantine_increment(
            settings, day, tuple(str(path) for path in increment.files), report, result.to_markdown()
        )
        failed = ", ".join(outcome.expectation for outcome in result.failed())
        raise_alert(
            settings,
            "data_quality",
            day.isoformat(),
            f"increment {day} failed validation ({failed}); quarantined in {quarantine}",
            {"data_version": increment.data_version, "failed": [o.expectation for o in result.failed()]},
        )
    return QualityOutcome(result, increment.data_version, report_paths, quarantine)
