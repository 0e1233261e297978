"""Validation of a staged increment: report, and on failure quarantine and alert; operator releases.

``validate_staged`` is the one place where an increment is judged, for Dagster's blocking
check and for ``freshrank ingest`` alike. A failed increment, including one whose files could
not be read, is copied to ``quarantine/<day>/<data version>/`` and raises a ``data_quality``
alert, and its failure is recorded in the staged metadata so that ``load_staged`` refuses to
publish it. An operator can release a quarantined version after review
(``release_increment``); its next validation then passes with the release named in the report.
"""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from freshrank.alerts import DATA_QUALITY, RELEASED, quarantine_alert_key, raise_alert
from freshrank.config import Settings
from freshrank.errors import QuarantineError
from freshrank.faults import crash_point
from freshrank.increments import data_version, increment_files
from freshrank.staging import (
    QuarantineEntry,
    list_quarantined,
    load_staged,
    quarantine_folder,
    quarantine_increment,
    read_release,
    read_staged_meta,
    record_validation,
    write_release,
)
from freshrank.validation import (
    READ_CHECK,
    ValidationResult,
    unreadable_result,
    validate_increment,
    write_validation_report,
)
from freshrank.warehouse import published_row_counts

logger = logging.getLogger(__name__)

PUBLISH_ENFORCED_CHECKS: frozenset[str] = frozenset(
    {
        READ_CHECK,
        "required_columns_present",
        "item_id_not_null",
        "event_time_not_null",
        "event_type_not_null",
        "event_type_known",
        "event_time_within_day",
        "quantity_not_zero",
    }
)
"""Checks whose failing rows the warehouse rejects again when publishing, so no release can override them."""


@dataclass(frozen=True)
class QualityOutcome:
    """A validation result with where its report and, on failure, the quarantined files went."""

    result: ValidationResult
    data_version: str
    report_paths: dict[str, Path]
    quarantine: Path | None
    release: dict | None = None
    """The operator's release that let a failed increment pass, if any."""


def validate_staged(settings: Settings, day: date) -> QualityOutcome:
    """Validate the staged increment of ``day``; a failure is quarantined and raises an alert.

    An increment whose files could not be read fails the ``files_readable`` check. A failed
    version that an operator released passes, with the release in the report.
    """
    meta = read_staged_meta(settings, day)
    version = meta["data_version"]
    result = _judge(settings, day, meta)
    release = None
    if not result.success and meta.get("read_error") is None:
        release = read_release(settings, day, version)
        if release is not None:
            result.release = release
            result.success = True
            logger.warning("increment %s failed validation but was released: %s", day, release.get("reason"))
    report_paths = write_validation_report(result, settings.reports_dir / "validation" / day.isoformat())
    quarantine = quarantine_folder(settings, day, version) if release is not None else None
    if not result.success:
        report = {**result.to_dict(), "data_version": version}
        quarantine = quarantine_increment(
            settings, day, tuple(meta["files"]), report, result.to_markdown(), tuple(meta.get("file_digests") or ())
        )
        crash_point("quality.after_quarantine")
        _alert_quarantined(settings, day, version, result, quarantine, report_paths["json"])
    record_validation(settings, day, version, passed=result.success, quarantine=quarantine, released=release is not None)
    return QualityOutcome(result, version, report_paths, quarantine, release)


def validation_clock() -> datetime:
    """Return the time against which event times are checked for lying in the future (UTC)."""
    return datetime.now(timezone.utc)


def _judge(settings: Settings, day: date, meta: dict) -> ValidationResult:
    if meta.get("read_error"):
        return unreadable_result(day, meta["read_error"], meta["files"])
    increment = load_staged(settings, day, check_validation=False)
    trailing = published_row_counts(settings.warehouse_path, day, settings.validation.volume_trailing_days)
    result = validate_increment(
        increment.frame, day, settings.timezone, settings.validation, trailing, now=validation_clock()
    )
    result.cleaning = dict(increment.cleaning)
    result.notes = list(increment.notes)
    return result


def failure_summary(result: ValidationResult) -> str:
    """Describe the failed expectations in one line: check, column and what was observed."""
    parts = []
    for outcome in result.failed():
        if outcome.expectation == READ_CHECK:
            parts.append(f"unreadable: {outcome.note}")
            continue
        column = f" on {outcome.column}" if outcome.column else ""
        observed = f"observed {json.dumps(outcome.observed, default=str)}, threshold {json.dumps(outcome.threshold, default=str)}"
        parts.append(f"{outcome.expectation}{column}: {outcome.note or observed}")
    return "; ".join(parts)


def _alert_quarantined(
    settings: Settings, day: date, version: str, result: ValidationResult, folder: Path, report: Path
) -> None:
    failed = result.failed()
    raise_alert(
        settings,
        DATA_QUALITY,
        day.isoformat(),
        f"increment {day} failed validation: {failure_summary(result)}; quarantined in {folder}",
        {
            "data_version": version,
            "rows": result.row_count,
            "failed": [outcome.expectation for outcome in failed],
            "observed": {outcome.expectation: outcome.observed for outcome in failed},
            "threshold": {outcome.expectation: outcome.threshold for outcome in failed},
            "quarantine": str(folder),
            "report": str(report),
        },
        key=quarantine_alert_key(day.isoformat(), version),
    )


# --- Operator release ---------------------------------------------------------------------------


def release_increment(
    settings: Settings, day: date, reason: str, version: str | None = None, released_by: str | None = None
) -> dict:
    """Release a quarantined increment for publishing after review, recording who, when and why.

    The release applies to one data version: a re-delivered file with other content is
    validated afresh. Checks in ``PUBLISH_ENFORCED_CHECKS`` cannot be released, because the
    warehouse rejects such rows when publishing. The day is published on its next run
    (`freshrank run --day DAY` or `freshrank ingest --day DAY`).

    Args:
        settings: Settings of the home.
        day: The quarantined day.
        reason: Why the increment may be published despite the failed checks.
        version: The data version to release; default the most recently quarantined one.
        released_by: Who released it; default the user running the process.

    Returns:
        The release record, with ``landed_version``, the data version now in the landing folder.

    Raises:
        QuarantineError: No such quarantined version, an empty reason, or a failed check that
            cannot be released.
    """
    if not reason.strip():
        raise QuarantineError("a release needs a reason: pass --reason with what was reviewed and why it may be published")
    entry = select_quarantined(settings, day, version)
    failed = failed_checks(entry)
    if READ_CHECK in failed:
        raise QuarantineError(
            f"increment {day} (data version {entry.data_version}) cannot be released: its files could not be "
            f"read, so there are no rows to publish. Deliver a corrected file for {day} instead."
        )
    enforced = sorted(set(failed) & PUBLISH_ENFORCED_CHECKS)
    if enforced:
        raise QuarantineError(
            f"increment {day} (data version {entry.data_version}) cannot be released: the failed check(s) "
            f"{', '.join(enforced)} are enforced again when publishing. Deliver a corrected file for {day} instead."
        )
    landed = _landed_version(settings, day)
    if entry.release is not None:
        logger.info("increment %s (data version %s) was already released", day, entry.data_version)
        return {**entry.release, "landed_version": landed}
    release = {
        "day": day.isoformat(),
        "data_version": entry.data_version,
        "reason": reason.strip(),
        "released_by": released_by or _current_user(),
        "released_at": datetime.now(timezone.utc).isoformat(),
        "failed_checks": failed,
    }
    write_release(settings, day, entry.data_version, release)
    raise_alert(
        settings,
        RELEASED,
        day.isoformat(),
        f"increment {day} (data version {entry.data_version}) released for publishing by "
        f"{release['released_by']} despite {', '.join(failed)}: {release['reason']}",
        {"data_version": entry.data_version, "failed": failed, "quarantine": str(entry.folder)},
        key=f"{RELEASED}:{day.isoformat()}:{entry.data_version}",
    )
    return {**release, "landed_version": landed}


def select_quarantined(settings: Settings, day: date, version: str | None = None) -> QuarantineEntry:
    """Return one quarantined version of a day: ``version``, or the most recently quarantined one.

    Raises:
        QuarantineError: The day has no complete quarantined version, or not ``version``.
    """
    entries = [entry for entry in list_quarantined(settings, day) if entry.complete]
    if not entries:
        raise QuarantineError(f"no quarantined increment for {day} under {settings.quarantine_dir}; see `freshrank quarantine list`")
    if version is None:
        return entries[-1]
    for entry in entries:
        if entry.data_version == version:
            return entry
    known = ", ".join(entry.data_version for entry in entries)
    raise QuarantineError(f"{day} has no quarantined data version {version!r}; quarantined versions: {known}")


def failed_checks(entry: QuarantineEntry) -> list[str]:
    """Return the names of the checks a quarantined version failed, from its ``validation.json``."""
    report = json.loads((entry.folder / "validation.json").read_text())
    return [outcome["expectation"] for outcome in report.get("outcomes", []) if not outcome.get("success")]


def _landed_version(settings: Settings, day: date) -> str | None:
    files = increment_files(settings.landing_dir, day)
    if not files:
        return None
    try:
        return data_version(files)
    except OSError as exc:
        logger.warning("cannot hash the landing files of %s: %s", day, exc)
        return None


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
