"""Reading one day's increment from the landing folder into the canonical, typed schema.

A day's increment is every ``.csv``, ``.parquet``, ``.jsonl`` or ``.json`` file in
``<landing>/<YYYY-MM-DD>/``; a ``.json`` file contains one array of objects or JSON Lines,
like a ``.jsonl`` file. Its data version is a hash of the files' bytes, independent
of file names and modification times, so a re-delivered identical file keeps the version.

Each file is read once into memory, and both the data version and the rows come from those
bytes. Reading rejects, with an :class:`IncrementError` that names the file and, where there
is one, the row:

* a file that resolves outside the landing folder (a symbolic link, or a link through ``..``),
  or that is not a regular file;
* a file whose size or modification time changed while it was read;
* an empty file, a compressed or UTF-16 file, text that is not UTF-8, NUL bytes;
* a CSV file with a broken quote, a row with more or fewer fields than the header, a repeated
  column name, or another delimiter than the comma; a Parquet file that is truncated;
* a missing required column, an unparseable timestamp, Unix epoch timestamps of mixed units,
  an empty ``item_id``, a non-numeric, NaN or infinite quantity or price;
* a day whose files contain no rows at all.

Some defects are repaired, and each repair is counted in :attr:`Increment.cleaning` and
described in :attr:`Increment.notes`: a UTF-8 byte-order mark is removed, spaces around column
names and ids are trimmed, a whitespace-only ``user_id`` becomes missing, an event type in
another letter case (``View``) is lower-cased, Unix epoch timestamps are converted with the
unit their magnitude shows, unknown columns are ignored, and a file byte-identical to another
file of the day is read once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrank.errors import IncrementError, MissingIncrementError
from freshrank.schema import (
    DAY_FORMAT,
    EVENT_TYPES,
    INCREMENT_COLUMNS,
    INCREMENT_SUFFIXES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
)

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20
_OFFSET_PATTERN = r"(?:Z|[+-]\d{2}:\d{2}|[+-]\d{4})$"
_EPOCH_PATTERN = r"[+-]?\d+(?:\.\d+)?"

_EPOCH_UNITS: tuple[tuple[str, str, float], ...] = (
    ("s", "seconds", 1e11),
    ("ms", "milliseconds", 1e14),
    ("us", "microseconds", 1e17),
    ("ns", "nanoseconds", float("inf")),
)
"""Unix epoch units by magnitude: a value below the bound (in absolute value) is in that unit.

1e11 seconds is the year 5138 and 1e11 milliseconds is March 1973, so for any plausible
event time the magnitude determines the unit.
"""

_DELIMITER_NAMES = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
_REFUSED_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
    (b"\xff\xfe\x00\x00", "UTF-32 text"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_MAGIC = b"PAR1"
_FORMAT_HINT = "Check that the file is complete and in the format its suffix names (.json: one array of objects, or JSON Lines)."
_DELIVERY_HINT = (
    "Deliver each file under a temporary name that starts with '.' or '_' and rename it when it is "
    "complete, then run the day again."
)


@dataclass(frozen=True)
class Increment:
    """A day's delivered events in the canonical schema, with the files they came from."""

    day: date
    frame: pd.DataFrame
    files: tuple[Path, ...]
    data_version: str
    file_rows: tuple[int, ...] = ()
    """Row count of each file, in the order of ``files`` and of the frame's rows; empty when unknown."""
    cleaning: dict[str, int] = field(default_factory=dict)
    """Count of each repair made while reading, for example ``event_type_case_normalized``."""
    notes: tuple[str, ...] = ()
    """One sentence per repair or ignored input, naming the file."""
    file_digests: tuple[str, ...] = ()
    """SHA-256 hex digest of each file's bytes as read, in the order of ``files``; empty when unknown."""


class _Cleaning:
    """Repairs made while reading a day's files: counts by kind and sentences naming the file."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, kind: str, count: int, note: str) -> None:
        if count <= 0:
            return
        self.counts[kind] += int(count)
        self.notes.append(note)
        logger.info("%s", note)


# --- Listing and versions -----------------------------------------------------------------------


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


def ignored_landing_entries(landing: Path) -> list[str]:
    """Return one message per file or folder under ``landing`` that no day's increment reads.

    Names starting with ``.`` or ``_`` are skipped on purpose (hidden and temporary files)
    and are not listed. Everything else is: a folder not named ``YYYY-MM-DD`` (``2024-1-13``,
    ``2024-02-30``), a file beside the day folders, and inside a day folder a subfolder or
    a file of another type (``events.csv.gz``, ``notes.txt``).
    """
    if not landing.is_dir():
        return []
    messages = []
    for entry in sorted(landing.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if not entry.is_dir():
            messages.append(f"{entry}: not read; put increment files into a day folder, landing/YYYY-MM-DD/")
        elif not _is_day_name(entry.name):
            messages.append(f"{entry}: not read; name day folders YYYY-MM-DD, for example 2024-01-05")
        else:
            messages.extend(_ignored_in_day(entry))
    return messages


def _is_day_name(name: str) -> bool:
    try:
        return datetime.strptime(name, DAY_FORMAT).strftime(DAY_FORMAT) == name
    except ValueError:
        return False


def _ignored_in_day(folder: Path) -> list[str]:
    kinds = ", ".join(sorted(INCREMENT_SUFFIXES))
    messages = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            messages.append(f"{entry}: not read; a day's increment files go directly into its day folder")
        elif entry.suffix.lower() not in INCREMENT_SUFFIXES:
            messages.append(f"{entry}: not read; increment files end with {kinds} (compressed files are not read)")
    return messages


def landed_days(landing: Path) -> list[date]:
    """List the days that have at least one increment file, oldest first."""
    if not landing.is_dir():
        return []
    days = []
    for folder in landing.iterdir():
        if not _is_day_name(folder.name):
            continue
        day = datetime.strptime(folder.name, DAY_FORMAT).date()
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


def outside_landing(path: Path, landing: Path) -> Path | None:
    """Return where ``path`` resolves to when that is outside the landing folder, else None.

    A broken link resolves to its missing target, which is reported the same way when it
    lies outside.
    """
    resolved = path.resolve()
    return None if resolved.is_relative_to(landing.resolve()) else resolved


def landing_file_digest(path: Path, landing: Path) -> str:
    """Return a landing file's digest, or a marker naming the target when it resolves outside the landing folder.

    A file outside is never read, not even to hash it; the marker still changes when the link
    is pointed elsewhere.
    """
    outside = outside_landing(path, landing)
    if outside is not None:
        return f"outside-landing:{outside}"
    return file_digest(path)


# --- Reading a day ------------------------------------------------------------------------------


def read_increment(landing: Path, day: date | str, timezone: str) -> Increment:
    """Read and type all of a day's increment files; raise on the first malformed value."""
    day = parse_day(day)
    files = increment_files(landing, day)
    if not files:
        raise MissingIncrementError(day.strftime(DAY_FORMAT), landing / day.strftime(DAY_FORMAT))
    zone = ZoneInfo(timezone)
    cleaning = _Cleaning()
    kept: list[Path] = []
    digests: list[str] = []
    frames: list[pd.DataFrame] = []

    for path in files:
        data = read_landing_bytes(path, landing)
        digest = hashlib.sha256(data).hexdigest()
        if digest in digests:
            cleaning.add("identical_files_skipped", 1, f"{path.name}: byte-identical to another file of the day; read once")
            continue
        frames.append(_read_file_bytes(path, data, zone, cleaning))
        kept.append(path)
        digests.append(digest)

    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise IncrementError(
            landing / day.strftime(DAY_FORMAT),
            f"the increment of {day} has no rows: {_files_phrase(kept)} only a header or nothing",
            "Deliver the day's events, or remove the day folder if the shop had no events that day.",
        )
    return Increment(
        day=day,
        frame=frame,
        files=tuple(kept),
        data_version=version_of_digests(digests),
        file_rows=tuple(len(part) for part in frames),
        cleaning=dict(cleaning.counts),
        notes=tuple(cleaning.notes),
        file_digests=tuple(digests),
    )


def read_landing_bytes(path: Path, landing: Path) -> bytes:
    """Read a landing file's bytes, refusing files outside the landing folder and files being written.

    Raises:
        IncrementError: The file resolves outside ``landing``, is not a regular file, vanished,
            or changed size or modification time while it was read.
    """
    outside = outside_landing(path, landing)
    if outside is not None:
        raise IncrementError(
            path,
            f"the file resolves to {outside}, outside the landing folder {landing.resolve()}",
            "Copy the file itself into the day folder: freshrank reads no file outside the landing "
            "folder, neither through a symbolic link nor through '..'.",
        )
    try:
        return _read_unchanging(path, path.resolve(strict=True))
    except FileNotFoundError as exc:
        raise IncrementError(path, "the file disappeared while the day was read", _DELIVERY_HINT) from exc


def _read_unchanging(path: Path, resolved: Path) -> bytes:
    """Read a regular file and check that its size and modification time did not change meanwhile."""
    # O_NONBLOCK: opening a FIFO put in place of a file must not wait for a writer.
    descriptor = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        before = os.fstat(descriptor)
        if not stat.S_ISREG(before.st_mode):
            raise IncrementError(path, "not a regular file", "Deliver increments as plain files.")
        data = _read_all(descriptor)
        after = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise IncrementError(
            path,
            f"the file changed while it was read ({before.st_size} bytes before, {after.st_size} bytes after, "
            f"{len(data)} bytes read)",
            _DELIVERY_HINT,
        )
    return data


def _read_all(descriptor: int) -> bytes:
    chunks = []
    while chunk := os.read(descriptor, _HASH_CHUNK_BYTES):
        chunks.append(chunk)
    return b"".join(chunks)


def read_increment_file(path: Path, zone: ZoneInfo) -> pd.DataFrame:
    """Read one increment file into the canonical columns and dtypes."""
    return _read_file_bytes(path, _read_unchanging(path, path.resolve(strict=True)), zone, _Cleaning())


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


# --- From bytes to raw columns --------------------------------------------------------------------


def _read_file_bytes(path: Path, data: bytes, zone: ZoneInfo, cleaning: _Cleaning) -> pd.DataFrame:
    """Parse one file's bytes by its suffix and type the columns; ``rows`` number the rows in errors."""
    suffix = path.suffix.lower()
    if not data.strip():
        raise IncrementError(path, f"the file is empty ({len(data)} bytes)", "Deliver the day's events, or remove the file.")
    if suffix == ".parquet":
        raw = _read_parquet(path, data)
        rows = np.arange(1, len(raw) + 1)
    else:
        text = _decode_text(path, data, cleaning)
        if suffix == ".csv":
            raw, rows = _read_csv(path, text, cleaning)
        else:
            raw = _read_json(path, text, suffix)
            rows = np.arange(1, len(raw) + 1)
    if raw.empty:
        cleaning.add("files_without_rows", 1, f"{path.name}: the file has no data rows")
    return _canonical(raw, path, zone, rows, cleaning)


def _decode_text(path: Path, data: bytes, cleaning: _Cleaning) -> str:
    """Decode a text file as UTF-8, removing a byte-order mark and refusing other encodings."""
    for prefix, kind in _REFUSED_PREFIXES:
        if data.startswith(prefix):
            raise IncrementError(
                path,
                f"the file is {kind}, not UTF-8 text",
                "Deliver the file uncompressed, as UTF-8 text (in a spreadsheet: save as CSV UTF-8).",
            )
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
        cleaning.add("utf8_bom_removed", 1, f"{path.name}: removed the UTF-8 byte-order mark")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise IncrementError(
            path,
            f"line {line} contains a NUL byte (byte offset {nul}): binary data, "
            "or UTF-16 text without a byte-order mark",
            "Deliver UTF-8 text.",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IncrementError(
            path,
            f"line {line} is not valid UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} "
            "(Latin-1 or Windows-1252 text?)",
            "Re-save the file as UTF-8; freshrank does not guess other encodings.",
        ) from exc


def _read_csv(path: Path, text: str, cleaning: _Cleaning) -> tuple[pd.DataFrame, np.ndarray]:
    """Parse comma-separated text strictly: every row has the header's field count, quotes close."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        start = 1
        header = next(reader)
        width = len(header)
        start = reader.line_num + 1
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                start = reader.line_num + 1
                continue
            if len(record) != width:
                raise IncrementError(
                    path,
                    f"line {start}: {len(record)} field(s), but the header has {width}",
                    "Quote every field that contains a comma, and check that the line is complete "
                    "(a file cut short ends with a partial line).",
                )
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise IncrementError(
            path,
            f"invalid CSV in the record that starts on line {start}: {exc}",
            "Close every quoted field with a double quote, and write a quote inside a quoted field as two quotes.",
        ) from exc
    columns = _clean_header(path, header, cleaning)
    raw = pd.DataFrame(records, columns=columns, dtype=object)
    return raw.mask(raw == ""), np.asarray(lines, dtype=np.int64)


def _clean_header(path: Path, header: list[str], cleaning: _Cleaning) -> list[str]:
    columns = [name.strip() for name in header]
    trimmed = sum(1 for before, after in zip(header, columns) if before != after)
    cleaning.add("column_names_trimmed", trimmed, f"{path.name}: trimmed spaces around {trimmed} column name(s)")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise IncrementError(
            path,
            f"column(s) {', '.join(map(repr, repeated))} appear more than once in the header",
            "Give every column one unique name.",
        )
    return columns


def _read_json(path: Path, text: str, suffix: str) -> pd.DataFrame:
    try:
        if suffix == ".json" and text.lstrip().startswith("["):
            return pd.read_json(io.StringIO(text), orient="records", dtype=False, convert_dates=False)
        return pd.read_json(io.StringIO(text), lines=True, dtype=False, convert_dates=False)
    except ValueError as exc:
        raise IncrementError(path, f"cannot read the file as {suffix.lstrip('.')}: {exc}", _FORMAT_HINT) from exc


def _read_parquet(path: Path, data: bytes) -> pd.DataFrame:
    if not (data.startswith(_PARQUET_MAGIC) and data.endswith(_PARQUET_MAGIC) and len(data) >= 8):
        raise IncrementError(
            path,
            "cannot read the file as parquet: it does not start and end with the Parquet magic bytes PAR1 "
            "(a truncated file, or another format)",
            _FORMAT_HINT,
        )
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise IncrementError(path, f"cannot read the file as parquet: {exc}", _FORMAT_HINT) from exc
    _reject_nan(path, table)
    # Without the pandas metadata, a stored index comes back as a column and the frame
    # gets a 0-based RangeIndex, which the typed columns and the row numbers rely on.
    return table.to_pandas(ignore_metadata=True)


def _reject_nan(path: Path, table: pa.Table) -> None:
    """Refuse NaN in numeric columns; pandas would turn it into a missing value (quantity 1)."""
    for name in ("quantity", "price"):
        if name not in table.column_names or not pa.types.is_floating(table.schema.field(name).type):
            continue
        is_nan = pc.fill_null(pc.is_nan(table.column(name)), False).to_numpy(zero_copy_only=False)
        if is_nan.any():
            row = int(is_nan.nonzero()[0][0]) + 1
            raise IncrementError(path, f"row {row}: column {name} is NaN (not a number)", _nan_hint(name))


def _nan_hint(name: str) -> str:
    return f"Leave {name} empty (null) when it is unknown; NaN usually means a failed computation upstream."


# --- From raw columns to the canonical schema ---------------------------------------------------


def _canonical(raw: pd.DataFrame, path: Path, zone: ZoneInfo, rows: np.ndarray, cleaning: _Cleaning) -> pd.DataFrame:
    """Type the raw columns of one file into the canonical columns and dtypes."""
    _require_columns(path, raw)
    unknown = [str(column) for column in raw.columns if column not in INCREMENT_COLUMNS]
    cleaning.add(
        "unknown_columns_ignored", len(unknown), f"{path.name}: ignored column(s) not in the schema: {', '.join(unknown)}"
    )
    typed = pd.DataFrame(
        {
            "event_time": _to_utc_timestamps(raw["event_time"], path, zone, rows, cleaning),
            "user_id": _to_ids(raw["user_id"], path, "user_id", rows, cleaning, nullable=True),
            "item_id": _to_ids(raw["item_id"], path, "item_id", rows, cleaning, nullable=False),
            "event_type": _to_event_types(raw["event_type"], path, cleaning),
        }
    )
    for column in OPTIONAL_COLUMNS:
        if column in ("quantity", "price"):
            default = 1.0 if column == "quantity" else None
            typed[column] = _to_floats(raw.get(column), len(raw), path, column, rows, default)
        elif column in raw.columns:
            typed[column] = _to_text(raw[column])
        else:
            typed[column] = pd.Series(pd.NA, index=raw.index, dtype="string")
    return typed[list(INCREMENT_COLUMNS)]


def _require_columns(path: Path, raw: pd.DataFrame) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if not missing:
        return
    found = [str(column) for column in raw.columns]
    problem = f"missing required column(s) {', '.join(missing)}; found {', '.join(found) or 'none'}"
    hint = f"Every increment needs {', '.join(REQUIRED_COLUMNS)}; rename the columns or use `freshrank import`."
    near = [f"{name!r}" for name in found if _plain_name(name) in missing]
    if near:
        problem += f" (column names are lower case and exact: found {', '.join(near)})"
    delimiter = _other_delimiter(found)
    if delimiter is not None:
        problem += f"; the header is a single field, so the file seems to be separated by {_DELIMITER_NAMES[delimiter]}"
        hint = "Write comma-separated values (CSV with ',' between fields)."
    raise IncrementError(path, problem, hint)


def _plain_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _other_delimiter(columns: list[str]) -> str | None:
    if len(columns) != 1:
        return None
    counts = {delimiter: columns[0].count(delimiter) for delimiter in _DELIMITER_NAMES}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else None


def _first_bad(mask: pd.Series) -> int:
    return int(mask.to_numpy().nonzero()[0][0])


def _shown(value: object) -> str:
    """Quote a cell value for an error message, numpy scalars as plain Python values."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _to_utc_timestamps(
    column: pd.Series, path: Path, zone: ZoneInfo, rows: np.ndarray, cleaning: _Cleaning
) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
        if parsed.dt.tz is None:
            parsed = _localize(parsed, column, path, zone, rows)
    elif pd.api.types.is_bool_dtype(column):
        raise IncrementError(path, "column event_time contains booleans, not timestamps", "Write event_time as ISO-8601 text.")
    elif pd.api.types.is_numeric_dtype(column):
        parsed = _from_epoch(column, column, path, rows, cleaning)
    else:
        text = column.astype("string").str.strip()
        numeric = text.str.fullmatch(_EPOCH_PATTERN).fillna(False).astype(bool)
        if numeric.any():
            _require_all_numeric(column, text, numeric, path, rows)
            parsed = _from_epoch(pd.to_numeric(text), column, path, rows, cleaning)
        else:
            parsed = _from_iso_text(column, text, path, zone, rows)
    bad = parsed.isna()
    if bad.any():
        row = _first_bad(bad)
        raise IncrementError(
            path,
            f"row {rows[row]}: column event_time has unparseable or missing value {_shown(column.iloc[row])}",
            "Write event_time as ISO-8601 text (2011-01-05T08:26:00Z) or a timestamp column.",
        )
    return parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _from_iso_text(column: pd.Series, text: pd.Series, path: Path, zone: ZoneInfo, rows: np.ndarray) -> pd.Series:
    has_offset = text.str.contains(_OFFSET_PATTERN, regex=True).fillna(False).astype(bool)
    parsed = pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        parsed[has_offset] = pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
    naive = ~has_offset & text.notna()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        parsed[naive] = _localize(local, column[naive], path, zone, rows)
    return parsed


def _require_all_numeric(column: pd.Series, text: pd.Series, numeric: pd.Series, path: Path, rows: np.ndarray) -> None:
    mixed = text.notna() & ~numeric
    if mixed.any():
        row, number_row = _first_bad(mixed), _first_bad(numeric)
        raise IncrementError(
            path,
            f"row {rows[row]}: event_time {_shown(column.iloc[row])} is text, but row {rows[number_row]} holds the "
            f"Unix epoch number {_shown(column.iloc[number_row])}",
            "Write every event_time of a file in one form: ISO-8601 text, or numbers in one epoch unit.",
        )


def _from_epoch(
    values: pd.Series, original: pd.Series, path: Path, rows: np.ndarray, cleaning: _Cleaning
) -> pd.Series:
    """Convert Unix epoch numbers whose unit (s, ms, us or ns) shows in their magnitude."""
    magnitude = values.abs().to_numpy(dtype="float64")
    present = ~np.isnan(magnitude)
    unit_index = np.searchsorted([bound for _, _, bound in _EPOCH_UNITS], magnitude, side="right")
    units_present = np.unique(unit_index[present])
    if len(units_present) > 1:
        first = int(present.nonzero()[0][0])
        other = int((present & (unit_index != unit_index[first])).nonzero()[0][0])
        raise IncrementError(
            path,
            f"row {rows[other]}: event_time {_shown(original.iloc[other])} looks like "
            f"{_EPOCH_UNITS[unit_index[other]][1]} since the Unix epoch, but row {rows[first]}'s "
            f"{_shown(original.iloc[first])} looks like {_EPOCH_UNITS[unit_index[first]][1]}",
            "Write every event_time of a file in one unit (or as ISO-8601 text), so that seconds and "
            "milliseconds cannot be confused.",
        )
    unit, unit_name, _ = _EPOCH_UNITS[int(units_present[0])] if len(units_present) else _EPOCH_UNITS[0]
    try:
        parsed = pd.to_datetime(values, unit=unit, utc=True)
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
        raise IncrementError(
            path, f"column event_time holds Unix epoch {unit_name} out of the supported range: {exc}",
            "Write event_time as ISO-8601 text.",
        ) from exc
    cleaning.add(
        f"event_time_epoch_{unit_name}",
        int(present.sum()),
        f"{path.name}: read {int(present.sum())} event_time value(s) as {unit_name} since the Unix epoch (UTC)",
    )
    return parsed


def _localize(local: pd.Series, original: pd.Series, path: Path, zone: ZoneInfo, rows: np.ndarray) -> pd.Series:
    """Read naive times as wall-clock times of the business timezone."""
    localized = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    invalid = localized.isna() & local.notna()
    if invalid.any():
        # ``local`` may contain only the naive rows; its index labels are the rows' positions in the file.
        row = int(invalid.index[_first_bad(invalid)])
        raise IncrementError(
            path,
            f"row {rows[row]}: event_time {_shown(original.loc[row])} does not exist or is ambiguous in {zone.key}",
            "Give the timestamp with its UTC offset.",
        )
    return localized.dt.tz_convert("UTC")


def _to_text(column: pd.Series) -> pd.Series:
    text = column.astype("string").str.strip()
    return text.mask(text == "", pd.NA)


def _to_event_types(column: pd.Series, path: Path, cleaning: _Cleaning) -> pd.Series:
    """Lower-case event types that match an allowed one in another letter case; keep the rest for validation."""
    text = _to_text(column)
    lowered = text.str.lower()
    fixable = (text.notna() & (lowered != text) & lowered.isin(EVENT_TYPES)).fillna(False).astype(bool)
    if fixable.any():
        examples = ", ".join(sorted(map(repr, text[fixable].unique()[:3])))
        cleaning.add(
            "event_type_case_normalized",
            int(fixable.sum()),
            f"{path.name}: lower-cased {int(fixable.sum())} event_type value(s) such as {examples}",
        )
        text = text.mask(fixable, lowered)
    return text


def _to_ids(
    column: pd.Series, path: Path, name: str, rows: np.ndarray, cleaning: _Cleaning, *, nullable: bool
) -> pd.Series:
    if pd.api.types.is_float_dtype(column):
        non_null = column.dropna()
        if not (non_null == non_null.round()).all():
            row = _first_bad(column.notna() & (column != column.round()))
            raise IncrementError(
                path,
                f"row {rows[row]}: column {name} holds non-integral number {_shown(column.iloc[row])}",
                "Write ids as strings.",
            )
        column = column.astype("Int64")
    original = column.astype("string")
    stripped = original.str.strip()
    blank = (original.notna() & (original != "") & (stripped == "")).fillna(False).astype(bool)
    trimmed = (stripped.notna() & (stripped != "") & (stripped != original)).fillna(False).astype(bool)
    ids = stripped.mask(stripped == "", pd.NA)
    if not nullable and ids.isna().any():
        row = _first_bad(ids.isna())
        detail = " (only whitespace)" if blank.iloc[row] else ""
        raise IncrementError(
            path,
            f"row {rows[row]}: column {name} is empty{detail}",
            f"Every event needs an {name}; drop the row or fill it in at the source.",
        )
    cleaning.add(
        f"{name}_blank_to_missing", int(blank.sum()), f"{path.name}: {int(blank.sum())} whitespace-only {name}(s) read as missing"
    )
    cleaning.add(
        f"{name}_whitespace_trimmed", int(trimmed.sum()), f"{path.name}: trimmed spaces around {int(trimmed.sum())} {name}(s)"
    )
    return ids


def _to_floats(
    column: pd.Series | None, length: int, path: Path, name: str, rows: np.ndarray, default: float | None
) -> pd.Series:
    if column is None:
        return pd.Series([default] * length, dtype="float64")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        numbers = column.astype("float64")
    else:
        text = column.astype("string").str.strip()
        not_a_number = text.str.fullmatch(r"[+-]?nan", case=False).fillna(False).astype(bool)
        if not_a_number.any():
            row = _first_bad(not_a_number)
            raise IncrementError(path, f"row {rows[row]}: column {name} is NaN (not a number)", _nan_hint(name))
        numbers = pd.to_numeric(text.mask(text == "", pd.NA), errors="coerce").astype("float64")
        bad = (numbers.isna() & text.notna() & (text != "")).fillna(False).astype(bool)
        if bad.any():
            row = _first_bad(bad)
            raise IncrementError(
                path,
                f"row {rows[row]}: column {name} has non-numeric value {_shown(column.iloc[row])}",
                f"Write {name} as a number, or leave it empty.",
            )
    infinite = pd.Series(np.isinf(numbers.to_numpy()), index=numbers.index)
    if infinite.any():
        row = _first_bad(infinite)
        raise IncrementError(
            path, f"row {rows[row]}: column {name} is infinite ({_shown(column.iloc[row])})", f"Write {name} as a finite number."
        )
    if default is not None:
        numbers = numbers.fillna(default)
    return numbers


def _files_phrase(paths: list[Path]) -> str:
    """Return "a.csv contains" or "a.csv, b.csv contain", for messages about the files of a day."""
    names = ", ".join(path.name for path in paths)
    return f"{names} contains" if len(paths) == 1 else f"{names} contain"
