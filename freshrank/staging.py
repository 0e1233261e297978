"""Staging and quarantine of increments.

An increment is read from the landing folder into ``<home>/staging/<day>.parquet`` and
validated there; only a staged increment that passed is published to the warehouse.
A failed one is copied byte for byte into ``<home>/quarantine/<day>/`` next to its
validation report; the landing files are left where they are.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

from freshrank.config import Settings
from freshrank.errors import FreshrankError
from freshrank.increments import Increment, read_increment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedIncrement:
    """Where a staged increment lives, and its data version."""

    day: date
    path: Path
    rows: int
    files: tuple[str, ...]
    data_version: str


def _staged_paths(settings: Settings, day: date) -> tuple[Path, Path]:
    base = settings.staging_dir / day.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to ``path`` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)


def stage_increment(settings: Settings, day: date) -> StagedIncrement:
    """Read a day's landing files, type them, and write them to the staging area."""
    increment = read_increment(settings.landing_dir, day, settings.timezone)
    data_path, meta_path = _staged_paths(settings, day)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = data_path.with_name(f".{data_path.name}.tmp")
    increment.frame.to_parquet(temporary, index=False)
    os.replace(temporary, data_path)
    files = tuple(str(path) for path in increment.files)
    write_json_atomic(
        meta_path,
        {
            "day": day.isoformat(),
            "files": files,
            "file_rows": list(increment.file_rows),
            "data_version": increment.data_version,
        },
    )
    return StagedIncrement(day, data_path, len(increment.frame), files, increment.data_version)


def load_staged(settings: Settings, day: date) -> Increment:
    """Load a staged increment back; raise if the day was never staged."""
    data_path, meta_path = _staged_paths(settings, day)
    if not (data_path.exists() and meta_path.exists()):
        raise FreshrankError(f"no staged increment for {day} under {settings.staging_dir}; stage the day first")
    meta = json.loads(meta_path.read_text())
    frame = pd.read_parquet(data_path)
    return Increment(
        day=day,
        frame=frame,
        files=tuple(Path(p) for p in meta["files"]),
        data_version=meta["data_version"],
        file_rows=tuple(meta.get("file_rows", ())),
    )


def quarantine_increment(settings: Settings, day: date, files: tuple[str, ...], report: dict, summary: str) -> Path:
    """Copy a failed increment's files and its validation report into ``quarantine/<day>/``.

    A later failure of the same day with other content is kept beside the earlier one,
    in a folder named after its data version, so nothing delivered is ever overwritten.
    """
    version = report.get("data_version", "unknown")
    folder = settings.quarantine_dir / day.isoformat() / version
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        source = Path(name)
        shutil.copy2(source, folder / source.name)
    write_json_atomic(folder / "validation.json", report)
    (folder / "validation.md").write_text(summary)
    write_json_atomic(
        folder / "quarantine.json",
        {
            "day": day.isoformat(),
            "data_version": version,
            "files": list(files),
            "quarantined_at": datetime.now(timezone.utc).isoformat(),
        },
    )
    logger.warning("quarantined increment %s (data version %s) in %s", day, version, folder)
    return folder
