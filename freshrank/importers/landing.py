"""Landing-zone writer shared by the importers and the synthetic shop, and source helpers.

An increment for day D is the folder ``<landing>/<YYYY-MM-DD>/``. The importers and the
synthetic shop write exactly one file there, ``events.parquet``, in the canonical schema
and in the canonical column order. A row belongs to the folder of its ``event_time``
converted to the business timezone. Files are written under a temporary name in the same
folder and moved into place with ``os.replace``, so a reader never sees half a file.

The second half of this module reads source tables (Parquet, CSV, Excel) and turns their
ID, number and timestamp columns into canonical values, raising ``ImportFormatError`` with
the file, row and value when a value cannot be read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freshrank.errors import ImportFormatError
from freshrank.schema import EVENT_TYPES, INCREMENT_COLUMNS, INCREMENT_SUFFIXES

logger = logging.getLogger(__name__)

INCREMENT_FILE_NAME = "events.parquet"
"""Name of the one file an importer or the synthetic shop writes into a day folder."""

REPORT_FILE_NAME = "_import_report.json"
"""Name of the import report, written at the top of the landing folder."""

STRING_DTYPE = pd.StringDtype("pyarrow")
"""pandas dtype of the string columns of a canonical frame."""

TIME_DTYPE = "datetime64[ns, UTC]"
"""pandas dtype of ``event_time`` in a canonical frame."""

STRING_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_type", "category", "session_id")
NON_NULL_COLUMNS: tuple[str, ...] = ("event_time", "item_id", "event_type", "quantity")

ARROW_SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("quantity", pa.float64(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("category", pa.string()),
        pa.field("session_id", pa.string()),
    ]
)
"""Parquet schema of ``events.parquet``: timestamps in microseconds, UTC."""


@dataclass
class SourceRows:
    """Rows an importer read from its source, already in the canonical schema.

    Attributes:
        frame: Canonical rows kept for the landing zone (see ``to_canonical``).
        rows_read: Rows (events) found in the source.
        set_aside: Rows left out, by reason; ``rows_read == len(frame) + sum(set_aside)``.
    """

    frame: pd.DataFrame
    rows_read: int
    set_aside: dict[str, int] = field(default_factory=dict)


@dataclass
class WrittenDays:
    """Result of splitting canonical rows into day folders.

    Attributes:
        days: Days written, ascending, as ``YYYY-MM-DD``.
        rows_written: Rows written over all those days.
        rows_beyond_max_days: Rows of later days left out because of ``max_days``.
    """

    days: list[str]
    rows_written: int
    rows_beyond_max_days: int


def to_canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the canonical columns of ``frame`` in canonical order and dtypes.

    ``event_time`` must be tz-aware; it is converted to UTC. IDs and text become pandas
    strings, ``quantity`` and ``price`` float64.

    Raises:
        ValueError: A canonical column is missing, ``event_time`` is naive, a non-null
            column contains nulls, ``event_type`` contains an unknown value, ``quantity`` is
            zero or ``price`` is negative. Importers clean these cases before calling
            this, so the error means a bug in the caller.
    """
    missing = [name for name in INCREMENT_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"canonical frame is missing columns {missing}; expected {list(INCREMENT_COLUMNS)}")

    times = frame["event_time"]
    if getattr(times.dtype, "tz", None) is None:
        raise ValueError("event_time must be tz-aware; localize naive times before writing")

    out = pd.DataFrame(index=frame.index)
    out["event_time"] = times.dt.tz_convert("UTC").astype(TIME_DTYPE)
    for name in INCREMENT_COLUMNS[1:]:
        if name in STRING_COLUMNS:
            out[name] = frame[name].astype(STRING_DTYPE)
        else:
            out[name] = frame[name].astype("float64")
    out = out.reset_index(drop=True)

    _check_canonical_values(out)
    return out


def _check_canonical_values(frame: pd.DataFrame) -> None:
    for name in NON_NULL_COLUMNS:
        nulls = int(frame[name].isna().sum())
        if nulls:
            raise ValueError(f"canonical column {name!r} has {nulls} null values")

    unknown = sorted(set(frame["event_type"].unique()) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"event_type has values {unknown}; allowed: {list(EVENT_TYPES)}")

    zero_quantity = int((frame["quantity"] == 0).sum())
    if zero_quantity:
        raise ValueError(f"quantity is zero in {zero_quantity} rows; it must be non-zero")

    negative_price = int((frame["price"] < 0).sum())
    if negative_price:
        raise ValueError(f"price is negative in {negative_price} rows; it must be >= 0 or null")


def first_reasons(rules: Sequence[tuple[str, pd.Series]], rows: int) -> tuple[pd.Series, dict[str, int]]:
    """Return the reason each row is set aside for (null when kept), and the count per reason.

    Args:
        rules: ``(reason, mask)`` pairs over a frame with a RangeIndex of ``rows`` rows. A
            row gets the reason of the first rule, in list order, whose mask is true for
            it; null mask values count as false.
        rows: Number of rows of the frame.

    Returns:
        Per-row reasons, and the count of every reason (0 when no row met it).
    """
    reasons = pd.Series(None, index=pd.RangeIndex(rows), dtype=object)
    already_set_aside = np.zeros(rows, dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in rules:
        hit = mask.fillna(False).astype(bool).to_numpy() & ~already_set_aside
        reasons[hit] = reason
        counts[reason] = int(hit.sum())
        already_set_aside |= hit
    return reasons, counts


def day_labels(event_time: pd.Series, timezone: str) -> pd.Series:
    """Return the business day (``YYYY-MM-DD``) of each tz-aware timestamp in ``timezone``."""
    wall_clock = event_time.dt.tz_convert(ZoneInfo(timezone)).dt.tz_localize(None)
    days = wall_clock.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return pd.Series(np.datetime_as_string(days, unit="D"), index=event_time.index)


def write_day(landing: Path, day: str, frame: pd.DataFrame) -> Path:
    """Write one day's canonical rows to ``<landing>/<day>/events.parquet`` atomically.

    The file goes to a hidden temporary name in the day folder first. That name does not
    end in an increment suffix, so a reader scanning the folder skips it. Other increment
    files already in the folder are kept, with a warning, because a reader would ingest
    them together with this one.

    Args:
        landing: Landing folder.
        day: Day as ``YYYY-MM-DD``; names the folder.
        frame: The day's rows, in the canonical schema (see ``to_canonical``).

    Returns:
        Path of the written file.
    """
    folder = Path(landing) / day
    folder.mkdir(parents=True, exist_ok=True)
    _warn_about_other_increments(folder)

    table = pa.Table.from_pandas(frame, schema=ARROW_SCHEMA, preserve_index=False)
    target = folder / INCREMENT_FILE_NAME
    temporary = folder / f".{INCREMENT_FILE_NAME}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _warn_about_other_increments(folder: Path) -> None:
    others = sorted(
        path.name
        for path in folder.iterdir()
        if path.suffix in INCREMENT_SUFFIXES and path.name != INCREMENT_FILE_NAME
    )
    if others:
        logger.warning(
            "%s also contains %s; they are ingested together with %s. Remove them if they are stale.",
            folder,
            others,
            INCREMENT_FILE_NAME,
        )


def write_days(
    landing: Path, frame: pd.DataFrame, timezone: str, *, max_days: int | None = None
) -> WrittenDays:
    """Split canonical rows into business days and write one file per day.

    Rows keep their order inside a day, after a stable sort by ``event_time``.

    Args:
        landing: Landing folder.
        frame: Canonical rows (see ``to_canonical``).
        timezone: IANA name of the business timezone whose calendar days name the folders.
        max_days: Write only the first ``max_days`` days that have rows; None writes all.

    Returns:
        The days written and the row counts.
    """
    if max_days is not None and max_days < 1:
        raise ValueError(f"max_days must be at least 1, not {max_days}")

    labels = day_labels(frame["event_time"], timezone)
    all_days = sorted(labels.unique())
    days = all_days if max_days is None else all_days[:max_days]
    chosen = set(days)

    instants = frame["event_time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    order = np.argsort(instants, kind="stable")
    ordered = frame.iloc[order].reset_index(drop=True)
    ordered_labels = labels.iloc[order].reset_index(drop=True)

    rows_written = 0
    for day, rows in ordered.groupby(ordered_labels, sort=True):
        if day not in chosen:
            continue
        write_day(landing, str(day), rows.reset_index(drop=True))
        rows_written += len(rows)

    logger.info("wrote %d rows into %d day folders under %s", rows_written, len(days), landing)
    return WrittenDays(
        days=list(days),
        rows_written=rows_written,
        rows_beyond_max_days=len(frame) - rows_written,
    )


def write_report(landing: Path, report: dict) -> Path:
    """Write the import report as JSON to ``<landing>/_import_report.json`` atomically."""
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / REPORT_FILE_NAME
    temporary = landing / f".{REPORT_FILE_NAME}.{os.getpid()}.tmp"
    try:
        temporary.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


# Reading source tables -----------------------------------------------------------------

TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".xlsx", ".xlsm")
"""File types ``read_table`` reads."""

TEXT_TIME_FORMATS: tuple[str, ...] = (
    "ISO8601",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y %H:%M:%S",
)
"""Forms of naive timestamp text, tried in order; the first that reads every value wins.

Slash dates are read month-first (``12/1/2010 8:26`` is 1 December), the form of the
widely shared UCI Online Retail CSV, unless some value only fits day-first.
"""

_OFFSET_SUFFIX = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})$")
_INTEGRAL_TEXT = r"^(-?\d+)\.0+$"


def read_table(path: Path, required: Sequence[str], layout: str) -> pd.DataFrame:
    """Read a Parquet, CSV or Excel table and check that it has the required columns.

    CSV cells are read as text and Excel cells as Python objects, so IDs such as
    ``85123A`` or ``00123`` keep their spelling. Callers convert the columns with
    ``id_strings``, ``parse_numbers`` and ``parse_timestamps``. Excel files are read from
    their first sheet.

    Args:
        path: Source file.
        required: Columns the importer needs.
        layout: Description of the expected layout, quoted in errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportFormatError: The file type is not supported, the file cannot be parsed, or
            required columns are missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; pass the path of the dataset file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        elif suffix in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, sheet_name=0, engine="openpyxl", dtype=object)
        else:
            raise ImportFormatError(
                f"{path}: unsupported file type {path.suffix!r}; use one of {list(TABLE_SUFFIXES)}"
            )
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise ImportFormatError(f"{path}: cannot read the file as {suffix[1:]}: {exc}") from exc

    require_columns(path, frame.columns, required, layout)
    return frame


def require_columns(path: Path, columns: Sequence[str], required: Sequence[str], layout: str) -> None:
    """Raise ``ImportFormatError`` naming the file and the missing columns, if any."""
    present = {str(name) for name in columns}
    missing = [name for name in required if name not in present]
    if missing:
        raise ImportFormatError(
            f"{path}: missing columns {missing}; found {sorted(present)}. Expected the {layout}."
        )


def row_label(path: Path, position: int) -> str:
    """Return how a user finds the data row at 0-based ``position`` in the file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return f"line {position + 2}"
    if suffix in (".xlsx", ".xlsm"):
        return f"sheet row {position + 2}"
    return f"row {position + 1}"


def _raise_at_first(path: Path, values: pd.Series, bad: pd.Series, column: str, problem: str) -> None:
    # ``values`` and ``bad`` share index labels. Frames come from ``read_table`` with a
    # RangeIndex, so the label of a row is its 0-based position in the file.
    bad = bad.astype(bool)
    count = int(bad.sum())
    if count == 0:
        return
    label = bad.index[bad.to_numpy()][0]
    raise ImportFormatError(
        f"{path}: {row_label(path, int(label))}: {column} value {values.loc[label]!r} {problem}; "
        f"{count} rows have such values. Fix or remove these rows and import again."
    )


def id_strings(values: pd.Series) -> pd.Series:
    """Return IDs as stripped strings; integral numbers lose their ``.0`` (17850.0 -> "17850").

    Empty strings become nulls.
    """
    if isinstance(values.dtype, pd.StringDtype):
        text = values
    elif pd.api.types.is_integer_dtype(values.dtype):
        text = values.astype("Int64").astype(STRING_DTYPE)
    else:
        text = values.map(_id_text, na_action="ignore").astype(STRING_DTYPE)

    # pyarrow's regex kernel is vectorized, unlike pandas' replace with a group reference.
    arrow = pc.utf8_trim_whitespace(pa.array(text, type=pa.string(), from_pandas=True))
    arrow = pc.replace_substring_regex(arrow, _INTEGRAL_TEXT, r"\1")
    arrow = pc.if_else(pc.equal(arrow, ""), pa.scalar(None, pa.string()), arrow)
    return pd.Series(pd.arrays.ArrowStringArray(arrow), index=values.index, name=values.name)


def _id_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Return ``values`` as float64; nulls and empty text become NaN.

    Raises:
        ImportFormatError: A value is not a number; names the row and the value.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")

    text = values.map(lambda value: value.strip() if isinstance(value, str) else value)
    blank = text.isna() | (text == "")
    parsed = pd.to_numeric(text.mask(blank), errors="coerce")
    _raise_at_first(path, values, parsed.isna() & ~blank, column, "is not a number")
    return parsed.astype("float64")


def parse_timestamps(values: pd.Series, path: Path, column: str, naive_zone: str) -> pd.Series:
    """Return ``values`` as UTC timestamps; nulls and empty text become NaT.

    Accepts datetime columns, Python datetimes (Excel cells) and text in the forms of
    ``TEXT_TIME_FORMATS``. Text with a UTC offset is read in that offset. Naive values are
    wall-clock times in ``naive_zone``.

    Raises:
        ImportFormatError: A value is not a date and time; names the row and the value.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _as_utc(values, naive_zone)

    result = pd.Series(pd.NaT, index=values.index, dtype=TIME_DTYPE)
    is_text = values.map(lambda value: isinstance(value, str) and value.strip() != "").astype(bool)
    is_moment = values.map(lambda value: isinstance(value, datetime)).astype(bool)
    blank = values.isna() | values.map(lambda value: isinstance(value, str) and value.strip() == "")
    _raise_at_first(path, values, ~(is_text | is_moment | blank.astype(bool)), column, "is not a date and time")

    if is_moment.any():
        result.loc[is_moment] = _parse_moments(values[is_moment], naive_zone)
    if is_text.any():
        result.loc[is_text] = _parse_time_text(values[is_text].str.strip(), path, column, naive_zone)
    return result


def _as_utc(times: pd.Series, naive_zone: str) -> pd.Series:
    if times.dt.tz is None:
        # NOTE: an ambiguous wall-clock time (the repeated hour when daylight saving
        # ends) is read as standard time, and a time in the skipped hour moves forward.
        standard_time = np.zeros(len(times), dtype=bool)
        times = times.dt.tz_localize(naive_zone, ambiguous=standard_time, nonexistent="shift_forward")
    return times.dt.tz_convert("UTC").astype(TIME_DTYPE)


def _parse_moments(moments: pd.Series, naive_zone: str) -> pd.Series:
    aware = moments.map(lambda value: value.tzinfo is not None).astype(bool)
    result = pd.Series(pd.NaT, index=moments.index, dtype=TIME_DTYPE)
    if aware.any():
        result.loc[aware] = pd.to_datetime(moments[aware], utc=True).astype(TIME_DTYPE)
    if (~aware).any():
        result.loc[~aware] = _as_utc(pd.to_datetime(moments[~aware]), naive_zone)
    return result


def _parse_time_text(text: pd.Series, path: Path, column: str, naive_zone: str) -> pd.Series:
    has_offset = text.str.contains(_OFFSET_SUFFIX).astype(bool)
    result = pd.Series(pd.NaT, index=text.index, dtype=TIME_DTYPE)

    if has_offset.any():
        with_offset = text[has_offset]
        parsed = pd.to_datetime(with_offset, format="ISO8601", utc=True, errors="coerce")
        _raise_at_first(path, with_offset, parsed.isna(), column, "is not a date and time")
        result.loc[has_offset] = parsed.astype(TIME_DTYPE)

    if (~has_offset).any():
        naive = text[~has_offset]
        parsed = _parse_naive_text(naive, path, column)
        result.loc[~has_offset] = _as_utc(parsed, naive_zone)
    return result


def _parse_naive_text(naive: pd.Series, path: Path, column: str) -> pd.Series:
    best: pd.Series | None = None
    for form in TEXT_TIME_FORMATS:
        parsed = pd.to_datetime(naive, format=form, errors="coerce")
        if parsed.notna().all():
            return parsed
        if best is None or parsed.notna().sum() > best.notna().sum():
            best = parsed

    forms = "ISO 8601 (2010-12-01 08:26:00), month/day/year (12/1/2010 8:26) or day/month/year (1/12/2010 08:26)"
    _raise_at_first(path, naive, best.isna(), column, f"is not a date and time in one form ({forms})")
    return best
