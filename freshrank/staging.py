"""Staging and quarantine of increments.

An increment is read from the landing folder into ``<home>/staging/<day>.parquet`` and
validated there; only a staged increment that passed is published to the warehouse.
A failed one is copied byte for byte into ``<home>/quarantine/<day>/<data version>/`` next
to its validation report; the landing files are left where they are.

Files that cannot be read are staged too, as a record of the read error without rows, so
that validation quarantines them like any other failed increment. ``staging/<day>.json``
describes the staged increment: files, digests, data version, the repairs made while
reading, the read error if any, and the outcome of the last validation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freshrank.config import Settings
from freshrank.errors import FreshrankError, IncrementError, ValidationFailedError
from freshrank.faults import crash_point
from freshrank.increments import (
    Increment,
    file_digest,
    increment_files,
    landing_file_digest,
    outside_landing,
    read_increment,
    version_of_digests,
)

logger = logging.getLogger(__name__)

QUARANTINE_RECORD = "quarantine.json"
"""File in a quarantine folder that describes it; written last, so its presence marks a complete copy."""
RELEASE_RECORD = "release.json"
"""File in a quarantine folder written when an operator releases the increment for publishing."""
REPORT_FILES: frozenset[str] = frozenset({"validation.json", "validation.md", QUARANTINE_RECORD, RELEASE_RECORD})
"""Names freshrank writes into a quarantine folder; a landing file of such a name is copied as ``landing-<name>``."""

_VERSION_METADATA_KEY = b"freshrank.data_version"


@dataclass(frozen=True)
class StagedIncrement:
    """Where a staged increment lives, and its data version."""

    day: date
    path: Path
    rows: int
    files: tuple[str, ...]
    data_version: str
    read_error: str | None = None
    """Message of the read error, naming file and row; None when the files were read."""
    cleaning: dict[str, int] = field(default_factory=dict)
    """Count of each repair made while reading (see ``Increment.cleaning``)."""


def _staged_paths(settings: Settings, day: date) -> tuple[Path, Path]:
    base = settings.staging_dir / day.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to ``path`` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)


# --- Staging ----------------------------------------------------------------------------------


def stage_increment(settings: Settings, day: date) -> StagedIncrement:
    """Read a day's landing files, type them, and write them to the staging area.

    A read error does not raise: it is staged as the day's state (no rows, the error in the
    metadata), so that validation quarantines the files and raises an alert. A day without
    any increment file still raises ``MissingIncrementError``.
    """
    try:
        increment = read_increment(settings.landing_dir, day, settings.timezone)
    except IncrementError as exc:
        return _stage_unreadable(settings, day, exc)
    data_path, meta_path = _staged_paths(settings, day)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    # The data version goes into the Parquet metadata as well, so that a crash between the two
    # renames below (new rows, old metadata file) is detected when the day is loaded.
    table = pa.Table.from_pandas(increment.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _VERSION_METADATA_KEY: increment.data_version.encode()})
    temporary = data_path.with_name(f".{data_path.name}.tmp")
    pq.write_table(table, temporary)
    crash_point("staging.before_replace")
    os.replace(temporary, data_path)
    files = tuple(str(path) for path in increment.files)
    write_json_atomic(
        meta_path,
        {
            "day": day.isoformat(),
            "files": files,
            "file_rows": list(increment.file_rows),
            "file_digests": list(increment.file_digests),
            "data_version": increment.data_version,
            "cleaning": increment.cleaning,
            "notes": list(increment.notes),
            "read_error": None,
            "validation": None,
        },
    )
    if increment.notes:
        logger.info("staged %s with repairs: %s", day, "; ".join(increment.notes))
    return StagedIncrement(day, data_path, len(increment.frame), files, increment.data_version, None, increment.cleaning)


def _stage_unreadable(settings: Settings, day: date, error: IncrementError) -> StagedIncrement:
    """Record a read error as the staged state of ``day``; the rows of an earlier staging are removed."""
    files = increment_files(settings.landing_dir, day)
    digests = [_digest_inside_landing(path, settings.landing_dir) for path in files]
    version = version_of_digests(digests)
    data_path, meta_path = _staged_paths(settings, day)
    write_json_atomic(
        meta_path,
        {
            "day": day.isoformat(),
            "files": [str(path) for path in files],
            "file_rows": [],
            "file_digests": digests,
            "data_version": version,
            "cleaning": {},
            "notes": [],
            "read_error": {"path": error.path, "problem": error.problem, "hint": error.hint, "message": str(error)},
            "validation": None,
        },
    )
    # The metadata names the read error before the old rows go, so no crash leaves them looking current.
    data_path.unlink(missing_ok=True)
    logger.warning("increment %s cannot be read: %s", day, error)
    return StagedIncrement(day, data_path, 0, tuple(str(path) for path in files), version, str(error))


def _digest_inside_landing(path: Path, landing: Path) -> str:
    """Hash a landing file as ``landing_file_digest`` does; a file that cannot be opened gets a marker."""
    try:
        return landing_file_digest(path, landing)
    except OSError as exc:
        return f"unreadable:{path.name}:{type(exc).__name__}"


def read_staged_meta(settings: Settings, day: date) -> dict:
    """Return the metadata of the staged increment of ``day``; raise if the day was never staged."""
    _, meta_path = _staged_paths(settings, day)
    if not meta_path.exists():
        raise FreshrankError(f"no staged increment for {day} under {settings.staging_dir}; stage the day first")
    return json.loads(meta_path.read_text())


def load_staged(settings: Settings, day: date, *, check_validation: bool = True) -> Increment:
    """Load a staged increment back.

    Args:
        settings: Settings of the home.
        day: The staged day.
        check_validation: Refuse an increment whose last validation failed and was not released.
            Validation itself passes False.

    Raises:
        FreshrankError: The day was never staged, or its files are inconsistent (an
            interrupted staging); stage it again.
        IncrementError: The files could not be read when the day was staged.
        ValidationFailedError: ``check_validation`` is set and the increment was quarantined.
    """
    meta = read_staged_meta(settings, day)
    error = meta.get("read_error")
    if error:
        raise IncrementError(error["path"], error["problem"], error["hint"])
    if check_validation:
        _require_not_quarantined(day, meta)
    data_path, _ = _staged_paths(settings, day)
    if not data_path.exists():
        raise FreshrankError(f"no staged increment for {day} under {settings.staging_dir}; stage the day first")
    table = pq.read_table(data_path)
    stored_version = (table.schema.metadata or {}).get(_VERSION_METADATA_KEY, b"").decode()
    if stored_version and stored_version != meta["data_version"]:
        raise FreshrankError(
            f"the staged rows of {day} are data version {stored_version} but its metadata names "
            f"{meta['data_version']} (staging was interrupted); stage the day again"
        )
    return Increment(
        day=day,
        frame=table.to_pandas(),
        files=tuple(Path(p) for p in meta["files"]),
        data_version=meta["data_version"],
        file_rows=tuple(meta.get("file_rows", ())),
        cleaning=dict(meta.get("cleaning") or {}),
        notes=tuple(meta.get("notes") or ()),
        file_digests=tuple(meta.get("file_digests") or ()),
    )


def _require_not_quarantined(day: date, meta: dict) -> None:
    validation = meta.get("validation")
    if not validation or validation.get("data_version") != meta["data_version"] or validation.get("passed"):
        return
    raise ValidationFailedError(
        f"increment {day} (data version {meta['data_version']}) failed validation and is quarantined in "
        f"{validation.get('quarantine')}; deliver a corrected file, or release it with "
        f"`freshrank quarantine release {day} --reason TEXT` after review"
    )


def record_validation(
    settings: Settings, day: date, data_version: str, *, passed: bool, quarantine: Path | None, released: bool
) -> None:
    """Store the outcome of validating the staged increment in its metadata, which ``load_staged`` checks."""
    _, meta_path = _staged_paths(settings, day)
    meta = read_staged_meta(settings, day)
    if meta["data_version"] != data_version:
        raise FreshrankError(
            f"the staged increment of {day} changed to data version {meta['data_version']} while version "
            f"{data_version} was validated; run the day again"
        )
    meta["validation"] = {
        "data_version": data_version,
        "passed": passed,
        "released": released,
        "quarantine": str(quarantine) if quarantine else None,
        "validated_at": datetime.now(timezone.utc).isoformat(),
    }
    write_json_atomic(meta_path, meta)


# --- Quarantine -------------------------------------------------------------------------------


def quarantine_folder(settings: Settings, day: date, data_version: str) -> Path:
    """Return the quarantine folder of one version of a day's increment."""
    return settings.quarantine_dir / day.isoformat() / data_version


def quarantine_increment(
    settings: Settings,
    day: date,
    files: tuple[str, ...],
    report: dict,
    summary: str,
    digests: tuple[str, ...] = (),
) -> Path:
    """Copy a failed increment's files and its validation report into ``quarantine/<day>/<version>/``.

    A later failure of the same day with other content is kept beside the earlier one,
    in a folder named after its data version, so nothing delivered is ever overwritten.
    Each file is copied under a temporary name and renamed, and ``quarantine.json`` is
    written last, so an interrupted quarantine is completed by running it again. A file that
    resolves outside the landing folder is not copied; ``quarantine.json`` names it and why.

    Args:
        settings: Settings of the home.
        day: The increment's day.
        files: Paths of the landing files.
        report: Validation result as a JSON-able dict, with ``data_version``.
        summary: Readable Markdown summary of the failure.
        digests: SHA-256 of each file as it was staged, in the order of ``files``; a copy whose
            bytes differ is flagged as changed since staging.
    """
    version = report.get("data_version", "unknown")
    folder = quarantine_folder(settings, day, version)
    folder.mkdir(parents=True, exist_ok=True)
    copied, skipped, changed = [], [], []
    for index, name in enumerate(files):
        source = Path(name)
        outside = outside_landing(source, settings.landing_dir)
        if outside is not None:
            skipped.append({"file": name, "reason": f"resolves to {outside}, outside the landing folder"})
            continue
        target = folder / (f"landing-{source.name}" if source.name in REPORT_FILES else source.name)
        try:
            _copy_atomic(source, target)
        except OSError as exc:
            skipped.append({"file": name, "reason": f"could not be copied: {exc}"})
            continue
        copied.append({"file": name, "copy": target.name})
        if index < len(digests) and file_digest(target) != digests[index]:
            changed.append(name)
    write_json_atomic(folder / "validation.json", report)
    _write_text_atomic(folder / "validation.md", summary)
    now = datetime.now(timezone.utc).isoformat()
    earlier = folder / QUARANTINE_RECORD
    first_time = json.loads(earlier.read_text()).get("quarantined_at", now) if earlier.exists() else now
    write_json_atomic(
        folder / QUARANTINE_RECORD,
        {
            "day": day.isoformat(),
            "data_version": version,
            "files": list(files),
            "copies": copied,
            "not_copied": skipped,
            "changed_since_staging": changed,
            "quarantined_at": first_time,
            "last_validated_at": now,
        },
    )
    for entry in skipped:
        logger.warning("quarantine of %s: %s %s", day, entry["file"], entry["reason"])
    if changed:
        logger.warning("quarantine of %s: %s changed after staging; the copies hold the newer bytes", day, changed)
    logger.warning("quarantined increment %s (data version %s) in %s", day, version, folder)
    return folder


def _copy_atomic(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copy2(source, temporary)
    os.replace(temporary, target)


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined version of a day's increment."""

    day: str
    data_version: str
    folder: Path
    record: dict
    """Contents of ``quarantine.json``; empty when the quarantine was interrupted before it."""
    release: dict | None
    """Contents of ``release.json`` when an operator released this version."""

    @property
    def complete(self) -> bool:
        return bool(self.record)


def list_quarantined(settings: Settings, day: date | None = None) -> list[QuarantineEntry]:
    """Return the quarantined increments, oldest day first and, within a day, oldest first."""
    root = settings.quarantine_dir
    if not root.is_dir():
        return []
    day_folders = [root / day.isoformat()] if day is not None else sorted(path for path in root.iterdir() if path.is_dir())
    entries = []
    for day_folder in day_folders:
        if not day_folder.is_dir():
            continue
        for folder in day_folder.iterdir():
            if folder.is_dir():
                entries.append(_entry(day_folder.name, folder))
    return sorted(entries, key=lambda entry: (entry.day, entry.record.get("quarantined_at", ""), entry.data_version))


def _entry(day: str, folder: Path) -> QuarantineEntry:
    record_path, release_path = folder / QUARANTINE_RECORD, folder / RELEASE_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    release = json.loads(release_path.read_text()) if release_path.exists() else None
    return QuarantineEntry(day, folder.name, folder, record, release)


def read_release(settings: Settings, day: date, data_version: str) -> dict | None:
    """Return the operator's release of one quarantined version, or None when it was not released."""
    path = quarantine_folder(settings, day, data_version) / RELEASE_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def write_release(settings: Settings, day: date, data_version: str, release: dict) -> Path:
    """Write the release record of one quarantined version."""
    path = quarantine_folder(settings, day, data_version) / RELEASE_RECORD
    write_json_atomic(path, release)
    return path
