"""Reading one day's increment from the landing folder into the canonical, typed schema.

A day's increment is every ``.csv``, ``.parquet``, ``.jsonl`` or ``.json`` file in
``<landing>/<YYYY-MM-DD>/``; a ``.json`` file contains one array of objects or JSON Lines,
like a ``.jsonl`` file. Its data version is a hash of the files' bytes, independent
of file names and modification times, so a re-delivered identical file keeps the version.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from freshrank.errors import IncrementError, MissingIncrementError
from freshrank.schema import (
    DAY_FORMAT,
    INCREMENT_COLUMNS,
    INCREMENT_SUFFIXES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
)

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20
_OFFSET_PATTERN = r"(?:Z|[+-]\d{2}:\d{2}|[+-]\d{4})$"


@dataclass(frozen=True)
class Increment:
    """A day's delivered events in the canonical schema, with the files they came from."""

    day: date
    frame: pd.DataFrame
    files: tuple[Path, ...]
    data_version: str
    file_rows: tuple[int, ...] = ()
    """Row count of each file, in the order of ``files`` and of the frame's rows; empty when unknown."""


def parse_day(value: str | date) -> date:
    """Parse a ``YYYY-MM-DD`` partition key."""
    if isinstance(value, date):
        return value
    try:
        return datetime.strptime(value, DAY_FORMAT).date()
    except ValueError as exc:
        raise ValueError(f"invalid day {value!r}: expected YYYY-MM-DD, for example 2011-01-05") from exc


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the UTC instants where ``day`` starts and the next day starts, in the business zone."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def increment_files(landing: Path, day: date) -> list[Path]:
    """List the increment files of a day, sorted by name; hidden and temporary files are skipped."""
    folder = landing / day.strftime(DAY_FORMAT)
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in INCREMENT_SUFFIXES and not path.name.startswith((".", "_"))
    )


def landed_days(landing: Path) -> list[date]:
    """List the days that have at least one increment file, oldest first."""
    if not landing.is_dir():
        return []
    days = []
    for folder in landing.iterdir():
        try:
            day = datetime.strptime(folder.name, DAY_FORMAT).date()
        except ValueError:
            continue
        if increment_files(landing, day):
            days.append(day)
    return sorted(days)


def file_digest(path: Path) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_version(files: list[Path]) -> str:
    """Hash the files' contents, ignoring names, order and byte-identical copies, into the day's data version."""
    return version_of_digests([file_digest(path) for path in files])


def version_of_digests(digests: list[str]) -> str:
    """Combine file digests into a data version; a digest repeated by a copied file counts once."""
    combined = hashlib.sha256("\n".join(sorted(set(digests))).encode()).hexdigest()
    return combined[:24]


def distinct_files(files: list[Path]) -> list[Path]:
    """Drop files whose bytes equal an earlier file's, so a re-delivered copy is not read twice."""
    seen: set[str] = set()
    kept = []
    for path in files:
        digest = file_digest(path)
        if digest in seen:
            logger.info("skipping %s: byte-identical to another file of the same day", path)
            continue
        seen.add(digest)
        kept.append(path)
    return kept


def read_increment(landing: Path, day: date | str, timezone: str) -> Increment:
    """Read and type all of a day's increment files; raise on the first malformed value."""
    day = parse_day(day)
    files = distinct_files(increment_files(landing, day))
    if not files:
        raise MissingIncrementError(day.strftime(DAY_FORMAT), landing / day.strftime(DAY_FORMAT))
    zone = ZoneInfo(timezone)
    frames = [read_increment_file(path, zone) for path in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return Increment(
        day=day,
        frame=frame,
        files=tuple(files),
        data_version=data_version(files),
        file_rows=tuple(len(part) for part in frames),
    )


def locate_row(increment: Increment, position: int) -> tuple[str, int]:
    """Return the file that contains row ``position`` (0-based) of the increment's frame, and its row there.

    Rows are numbered as read errors number them: a CSV row by its line (the header is line 1),
    a row of another format from 1. Without per-file row counts, all files and the frame's
    row counted from 1 are returned.
    """
    if len(increment.file_rows) != len(increment.files):
        return ", ".join(str(path) for path in increment.files), position + 1
    offset = position
    for path, rows in zip(increment.files, increment.file_rows):
        if offset < rows:
            return str(path), offset + _first_line(path)
        offset -= rows
    raise IndexError(f"row {position} is beyond the {sum(increment.file_rows)} rows of the increment of {increment.day}")


def _first_line(path: Path) -> int:
    # Data rows of a CSV file start on line 2, after the header.
    return 2 if path.suffix.lower() == ".csv" else 1


def read_increment_file(path: Path, zone: ZoneInfo) -> pd.DataFrame:
    """Read one increment file into the canonical columns and dtypes."""
    raw = _read_raw(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise IncrementError(
            path,
            f"missing required column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns)) or 'none'}",
            f"Every increment needs {', '.join(REQUIRED_COLUMNS)}; rename the columns or use `freshrank import`.",
        )
    first_line = _first_line(path)
    typed = pd.DataFrame(
        {
            "event_time": _to_utc_timestamps(raw["event_time"], path, zone, first_line),
            "user_id": _to_ids(raw["user_id"], path, "user_id", first_line, nullable=True),
            "item_id": _to_ids(raw["item_id"], path, "item_id", first_line, nullable=False),
            "event_type": _to_text(raw["event_type"]),
        }
    )
    for column in OPTIONAL_COLUMNS:
        if column in ("quantity", "price"):
            default = 1.0 if column == "quantity" else None
            typed[column] = _to_floats(raw.get(column), len(raw), path, column, first_line, default)
        else:
            typed[column] = _to_text(raw[column]) if column in raw.columns else pd.Series(
                pd.NA, index=raw.index, dtype="string"
            )
    return typed[list(INCREMENT_COLUMNS)]


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            # Without the pandas metadata, a stored index comes back as a column and the frame
            # gets a 0-based RangeIndex, which the typed columns and the row numbers rely on.
            return pq.read_table(path).to_pandas(ignore_metadata=True)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if suffix == ".json" and _starts_with_array(path):
            return pd.read_json(path, orient="records", dtype=False, convert_dates=False)
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise IncrementError(
            path,
            f"cannot read the file as {suffix.lstrip('.')}: {exc}",
            "Check that the file is complete and in the format its suffix names "
            "(.json: one array of objects, or JSON Lines).",
        ) from exc


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4096).lstrip().startswith(b"[")


def _first_bad(mask: pd.Series) -> int:
    return int(mask.to_numpy().nonzero()[0][0])


def _to_utc_timestamps(column: pd.Series, path: Path, zone: ZoneInfo, first_line: int) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
        if parsed.dt.tz is None:
            parsed = _localize(parsed, column, path, zone, first_line)
    else:
        text = column.astype("string").str.strip()
        has_offset = text.str.contains(_OFFSET_PATTERN, regex=True).fillna(False).astype(bool)
        parsed = pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
        if has_offset.any():
            parsed[has_offset] = pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
        naive = ~has_offset & text.notna()
        if naive.any():
            local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
            parsed[naive] = _localize(local, column[naive], path, zone, first_line)
    bad = parsed.isna()
    if bad.any():
        row = _first_bad(bad)
        raise IncrementError(
            path,
            f"row {row + first_line}: column event_time has unparseable or missing value {column.iloc[row]!r}",
            "Write event_time as ISO-8601 text (2011-01-05T08:26:00Z) or a timestamp column.",
        )
    return parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _localize(local: pd.Series, original: pd.Series, path: Path, zone: ZoneInfo, first_line: int) -> pd.Series:
    """Read naive times as wall-clock times of the business timezone."""
    localized = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    invalid = localized.isna() & local.notna()
    if invalid.any():
        # ``local`` may contain only the naive rows; its index labels are the rows' positions in the file.
        row = int(invalid.index[_first_bad(invalid)])
        raise IncrementError(
            path,
            f"row {row + first_line}: event_time {original.loc[row]!r} does not exist or is ambiguous in {zone.key}",
            "Give the timestamp with its UTC offset.",
        )
    return localized.dt.tz_convert("UTC")


def _to_text(column: pd.Series) -> pd.Series:
    text = column.astype("string").str.strip()
    return text.mask(text == "", pd.NA)


def _to_ids(column: pd.Series, path: Path, name: str, first_line: int, *, nullable: bool) -> pd.Series:
    if pd.api.types.is_float_dtype(column):
        non_null = column.dropna()
        if not (non_null == non_null.round()).all():
            row = _first_bad(column.notna() & (column != column.round()))
            raise IncrementError(
                path,
                f"row {row + first_line}: column {name} holds non-integral number {column.iloc[row]!r}",
                "Write ids as strings.",
            )
        column = column.astype("Int64")
    ids = _to_text(column)
    if not nullable and ids.isna().any():
        row = _first_bad(ids.isna())
        raise IncrementError(
            path,
            f"row {row + first_line}: column {name} is empty",
            f"Every event needs an {name}; drop the row or fill it in at the source.",
        )
    return ids


def _to_floats(
    column: pd.Series | None, length: int, path: Path, name: str, first_line: int, default: float | None
) -> pd.Series:
    if column is None:
        return pd.Series([default] * length, dtype="float64")
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = numbers.isna() & column.notna()
    if bad.any():
        row = _first_bad(bad)
        raise IncrementError(
            path,
            f"row {row + first_line}: column {name} has non-numeric value {column.iloc[row]!r}",
            f"Write {name} as a number, or leave it empty.",
        )
    if default is not None:
        numbers = numbers.fillna(default)
    return numbers
