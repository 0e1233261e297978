"""Importers that turn public e-commerce datasets into daily landing increments.

``import_dataset`` reads a dataset in one of ``IMPORT_FORMATS``, sets aside rows that no
canonical event can represent (counted by reason), splits the rest into calendar days of
the business timezone and writes ``<landing>/<YYYY-MM-DD>/events.parquet`` per day plus
``<landing>/_import_report.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from freshrank.errors import ImportFormatError
from freshrank.importers import complete_journey, online_retail, otto
from freshrank.importers.landing import SourceRows, write_days, write_report

logger = logging.getLogger(__name__)

BEYOND_MAX_DAYS = "beyond_max_days"
"""Set-aside reason of rows on days after the first ``max_days`` days."""


@dataclass(frozen=True)
class ImportFormat:
    """One supported dataset layout.

    Attributes:
        name: Format name given to ``import_dataset`` and ``freshrank import``.
        reader: Function ``(source, timezone) -> SourceRows`` that reads the dataset.
        default_timezone: IANA name of the business timezone used when none is given.
        layout: Description of the expected input, quoted in errors.
    """

    name: str
    reader: Callable[[Path, str], SourceRows]
    default_timezone: str
    layout: str


IMPORT_FORMATS: dict[str, ImportFormat] = {
    "online-retail": ImportFormat("online-retail", online_retail.read_online_retail, "UTC", online_retail.LAYOUT),
    "otto": ImportFormat("otto", otto.read_otto, "Europe/Berlin", otto.LAYOUT),
    "complete-journey": ImportFormat(
        "complete-journey", complete_journey.read_complete_journey, "America/New_York", complete_journey.LAYOUT
    ),
}
"""Supported formats by name."""

DEFAULT_TIMEZONES: dict[str, str] = {name: spec.default_timezone for name, spec in IMPORT_FORMATS.items()}
"""Business timezone of each format when the caller gives none."""


@dataclass
class ImportReport:
    """Outcome of one import, also written to ``<landing>/_import_report.json``.

    Attributes:
        format: Format name.
        source: Path of the dataset read.
        timezone: Business timezone whose calendar days name the day folders.
        days: Days written, ascending, as ``YYYY-MM-DD``.
        rows_read: Rows (events) found in the source.
        rows_written: Rows written into the day folders.
        set_aside: Rows not written, by reason; ``rows_read == rows_written + sum(set_aside)``.
    """

    format: str
    source: str
    timezone: str
    days: list[str]
    rows_read: int
    rows_written: int
    set_aside: dict[str, int]

    def to_dict(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return asdict(self)


def import_dataset(
    fmt: str,
    source: Path,
    landing: Path,
    *,
    timezone: str | None = None,
    max_days: int | None = None,
) -> ImportReport:
    """Import a dataset into the landing folder, one ``events.parquet`` per business day.

    Day folders written by an earlier import are replaced when this import writes the
    same day, and kept otherwise.

    Args:
        fmt: One of ``IMPORT_FORMATS``.
        source: Dataset file (or folder, for complete-journey).
        landing: Landing folder; created when missing.
        timezone: IANA name of the business timezone; ``DEFAULT_TIMEZONES[fmt]`` when None.
        max_days: Write only the first ``max_days`` days that have events (demos, tests);
            the rows of later days are counted as ``beyond_max_days``.

    Returns:
        The import report.

    Raises:
        ImportFormatError: ``fmt`` is unknown, or the source does not match the format
            (missing columns, unreadable values, an empty source).
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``timezone`` is not an IANA name, or ``max_days`` is below 1.
    """
    spec = _lookup_format(fmt)
    zone = timezone or spec.default_timezone
    _check_arguments(zone, max_days)

    source = Path(source)
    rows = spec.reader(source, zone)
    if rows.rows_read == 0:
        raise ImportFormatError(f"{source}: no rows found. Expected the {spec.layout}.")

    written = write_days(Path(landing), rows.frame, zone, max_days=max_days)
    set_aside = dict(rows.set_aside)
    if max_days is not None:
        set_aside[BEYOND_MAX_DAYS] = written.rows_beyond_max_days

    report = ImportReport(
        format=spec.name,
        source=str(source),
        timezone=zone,
        days=written.days,
        rows_read=rows.rows_read,
        rows_written=written.rows_written,
        set_aside=set_aside,
    )
    write_report(Path(landing), report.to_dict())
    _log_report(report)
    return report


def _lookup_format(fmt: str) -> ImportFormat:
    if fmt not in IMPORT_FORMATS:
        raise ImportFormatError(f"unknown import format {fmt!r}; valid formats: {', '.join(IMPORT_FORMATS)}")
    return IMPORT_FORMATS[fmt]


def _check_arguments(zone: str, max_days: int | None) -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {zone!r}; use an IANA name such as 'Europe/London'") from exc
    if max_days is not None and max_days < 1:
        raise ValueError(f"max_days must be at least 1, not {max_days}")


def _log_report(report: ImportReport) -> None:
    logger.info(
        "imported %s from %s: %d rows read, %d written into %d days (%s), set aside %s",
        report.format,
        report.source,
        report.rows_read,
        report.rows_written,
        len(report.days),
        report.timezone,
        report.set_aside,
    )
    if report.rows_written == 0:
        logger.warning("import of %s wrote no rows; every row was set aside: %s", report.source, report.set_aside)
