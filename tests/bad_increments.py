"""The bad-increment corpus: one small delivery per kind of defect found in real shop exports.

Each kind turns a good day's events (the canonical frame of one synthetic day) into the
files a broken export would deliver and writes them into a landing day folder. It also states
the expected outcome: quarantined with a message naming the cause, or accepted with the
counts of the repairs. ``tests/test_bad_increments.py`` runs every kind through the daily loop.

Run as a script to write the whole corpus as files, one folder per kind:

    python tests/bad_increments.py /tmp/bad_corpus
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

QUARANTINED = "quarantined"
ACCEPTED = "accepted"

CHANGE_DURING_READ = "change_during_read"
"""Hook: the test appends to the file right after freshrank has read its bytes."""
CLOCK_AT_NOON = "clock_at_noon"
"""Hook: the test sets the validation clock to noon UTC of the corpus day."""

Writer = Callable[[Path, pd.DataFrame], dict[str, int]]
"""Writes a kind's files into a day folder, given the good day's events; returns expected counts."""


@dataclass(frozen=True)
class BadKind:
    """One kind of bad increment and the outcome freshrank must reach for it."""

    name: str
    description: str
    outcome: str
    """``quarantined`` or ``accepted``."""
    write: Writer
    cause: tuple[str, ...] = ()
    """Text the alert message and the quarantined ``validation.md`` must both contain."""
    failed_check: str | None = None
    """Check that must fail (``files_readable`` for files that cannot be read)."""
    hook: str | None = None
    """Extra setup the test applies around the run (see ``CHANGE_DURING_READ``, ``CLOCK_AT_NOON``)."""
    ids: tuple[str, ...] = field(default=())
    """Ids that an accepted kind must store verbatim in the warehouse."""


# --- Writing helpers ------------------------------------------------------------------------------


def csv_bytes(frame: pd.DataFrame, **options) -> bytes:
    """Return a frame as UTF-8 CSV, event times as ISO-8601 text with a UTC offset."""
    text = frame.assign(event_time=frame["event_time"].map(lambda value: value.isoformat())).to_csv(index=False, **options)
    return text.encode("utf-8")


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "events.csv", **options) -> Path:
    path = folder / name
    path.write_bytes(csv_bytes(frame, **options))
    return path


def write_parquet(folder: Path, frame: pd.DataFrame, name: str = "events.parquet") -> Path:
    path = folder / name
    frame.to_parquet(path, index=False)
    return path


def rows(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.Index:
    """Return the labels of a fixed random share of the rows (at least one)."""
    count = max(1, int(len(frame) * share))
    return frame.sample(n=count, random_state=seed).index


# --- Files that cannot be read --------------------------------------------------------------------


def empty_file(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.csv").write_bytes(b"")
    return {}


def header_only(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame.iloc[0:0])
    return {}


def missing_column(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame.drop(columns=["item_id"]))
    return {}


def renamed_column(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame.rename(columns={"user_id": "customer"}))
    return {}


def column_name_case(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame.rename(columns={"user_id": "User_ID"}))
    return {}


def duplicate_header(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    text = csv_bytes(frame).decode()
    header, _, body = text.partition("\n")
    (folder / "events.csv").write_text(header.replace("category", "item_id") + "\n" + body)
    return {}


def wrong_delimiter(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame, sep=";")
    return {}


def latin1_text(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[frame.index[5], "category"] = "Café Crème"
    text = csv_bytes(frame).decode()
    (folder / "events.csv").write_bytes(text.encode("latin-1"))
    return {}


def utf16_text(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.csv").write_bytes(csv_bytes(frame).decode().encode("utf-16"))
    return {}


def gzip_named_csv(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.csv").write_bytes(gzip.compress(csv_bytes(frame), mtime=0))
    return {}


def nul_bytes(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    data = bytearray(csv_bytes(frame))
    data[len(data) // 2] = 0
    (folder / "events.csv").write_bytes(bytes(data))
    return {}


def truncated_parquet(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    (folder / "events.parquet").write_bytes(data[: len(data) // 2])
    return {}


def csv_named_parquet(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.parquet").write_bytes(csv_bytes(frame))
    return {}


def broken_quote(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    lines = csv_bytes(frame).decode().splitlines()
    fields = lines[10].split(",")
    fields[2] = '"' + fields[2]
    lines[10] = ",".join(fields)
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    return {}


def truncated_csv(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    data = csv_bytes(frame)
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    (folder / "events.csv").write_bytes(data[: last_line_start + 45])
    return {}


def malformed_jsonl(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    text = frame.to_json(orient="records", lines=True, date_format="iso")
    lines = text.splitlines()
    lines[3] = lines[3][:-12]
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return {}


def null_item_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.05), "item_id"] = None
    write_csv(folder, frame)
    return {}


def whitespace_item_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.05), "item_id"] = "   "
    write_csv(folder, frame)
    return {}


def unparseable_timestamp(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    text = frame.assign(event_time=frame["event_time"].map(lambda value: value.isoformat()))
    text.loc[text.index[7], "event_time"] = "yesterday afternoon"
    text.to_csv(folder / "events.csv", index=False)
    return {}


def mixed_seconds_milliseconds(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    seconds = frame["event_time"].map(lambda value: int(value.timestamp()))
    epoch = seconds.astype("int64").copy()
    epoch.iloc[len(epoch) // 2 :] *= 1000
    write_parquet(folder, frame.assign(event_time=epoch))
    return {}


def nan_price_csv(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    text = csv_bytes(frame.assign(price=frame["price"].map(repr))).decode()
    lines = text.splitlines()
    fields = lines[4].split(",")
    fields[5] = "NaN"
    lines[4] = ",".join(fields)
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    return {}


def nan_price_parquet(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # pandas writes NaN as null; a NaN written by another tool needs pyarrow without pandas semantics.
    prices = frame["price"].to_numpy(dtype="float64", copy=True)
    prices[rows(frame, 0.02).map(frame.index.get_loc)] = np.nan
    table = pa.Table.from_pandas(frame.drop(columns=["price"]), preserve_index=False)
    table = table.append_column("price", pa.array(prices, from_pandas=False))
    pq.write_table(table, folder / "events.parquet")
    return {}


def infinite_quantity(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.01), "quantity"] = np.inf
    write_csv(folder, frame)
    return {}


def outside_symlink(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # The link climbs out of the landing folder: <home>/landing/<day>/events.csv -> ../../../secret/events.csv
    secret = folder.parent.parent.parent / "secret"
    secret.mkdir(exist_ok=True)
    write_csv(secret, frame)
    os.symlink(Path("..") / ".." / ".." / "secret" / "events.csv", folder / "events.csv")
    return {}


def changed_while_read(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame)
    return {}


# --- Files that are read, and fail the validation suite -----------------------------------------


def unknown_event_type(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.05), "event_type"] = "click"
    write_parquet(folder, frame)
    return {}


def other_day_timestamps(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    moved = rows(frame, 0.05)
    frame.loc[moved, "event_time"] = frame.loc[moved, "event_time"] - pd.Timedelta(days=1)
    write_parquet(folder, frame)
    return {}


def future_timestamps(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # With the validation clock at noon of the day, events in the evening are in the future.
    day_start = frame["event_time"].min().normalize()
    frame = frame.copy()
    late = rows(frame, 0.1)
    frame.loc[late, "event_time"] = day_start + pd.Timedelta(hours=23)
    write_parquet(folder, frame)
    return {}


def epoch_zero(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    seconds = frame["event_time"].map(lambda value: int(value.timestamp())).astype("int64")
    seconds.iloc[:3] = 0
    frame.assign(event_time=seconds).to_csv(folder / "events.csv", index=False)
    return {}


def negative_price(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.02), "price"] = -9.99
    write_parquet(folder, frame)
    return {}


def absurd_quantity(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[frame.index[3], "quantity"] = 5_000_000.0
    write_parquet(folder, frame)
    return {}


def absurd_price(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[frame.index[3], "price"] = 49_999_999.0
    write_parquet(folder, frame)
    return {}


def zero_quantity(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[rows(frame, 0.02), "quantity"] = 0.0
    write_parquet(folder, frame)
    return {}


def all_rows_duplicated(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_parquet(folder, pd.concat([frame, frame], ignore_index=True))
    return {}


def volume_spike(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # Twenty shifted copies of the day: distinct rows, twenty times the usual volume.
    copies = [
        frame.assign(event_time=frame["event_time"] + pd.Timedelta(milliseconds=copy), session_id=frame["session_id"] + f"-{copy}")
        for copy in range(20)
    ]
    write_parquet(folder, pd.concat(copies, ignore_index=True))
    return {}


def near_empty_day(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_parquet(folder, frame.iloc[:5])
    return {}


def single_user_bot(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_parquet(folder, frame.assign(user_id="crawler-0001"))
    return {}


def ten_kilobyte_id(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[frame.index[2], "user_id"] = "u" * 10_240
    write_parquet(folder, frame)
    return {}


def line_break_in_id(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # A quoted CSV field may contain a line break; in an id it comes from a broken export.
    frame = frame.copy()
    frame.loc[frame.index[6], "item_id"] = "i000001\nview"
    write_csv(folder, frame)
    return {}


# --- Files that are accepted, with counted repairs ------------------------------------------------


def extra_columns(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_csv(folder, frame.assign(coupon="NONE", referrer="https://example.invalid/"))
    return {"unknown_columns_ignored": 2, "rows_published": len(frame)}


def utf8_bom(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.csv").write_bytes(b"\xef\xbb\xbf" + csv_bytes(frame))
    return {"utf8_bom_removed": 1, "rows_published": len(frame)}


def crlf_line_endings(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    (folder / "events.csv").write_bytes(csv_bytes(frame).replace(b"\n", b"\r\n"))
    return {"rows_published": len(frame)}


def null_user_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    missing = rows(frame, 0.1)
    frame.loc[missing, "user_id"] = None
    write_csv(folder, frame)
    return {"rows_without_user": len(missing)}


def whitespace_user_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    blank = rows(frame, 0.1)
    frame.loc[blank, "user_id"] = "  "
    write_csv(folder, frame)
    return {"user_id_blank_to_missing": len(blank), "rows_without_user": len(blank)}


def padded_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    padded = rows(frame, 0.1)
    frame.loc[padded, "item_id"] = " " + frame.loc[padded, "item_id"] + " "
    write_csv(folder, frame)
    return {"item_id_whitespace_trimmed": len(padded), "rows_published": len(frame)}


def event_type_letter_case(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    changed = rows(frame, 0.2)
    frame.loc[changed, "event_type"] = frame.loc[changed, "event_type"].str.upper()
    write_csv(folder, frame)
    return {"event_type_case_normalized": len(changed), "rows_published": len(frame)}


def epoch_seconds(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    # Whole seconds: the millisecond part of the synthetic times is dropped, rows stay distinct.
    seconds = frame["event_time"].map(lambda value: int(value.timestamp())).astype("int64")
    frame.assign(event_time=seconds).to_csv(folder / "events.csv", index=False)
    return {"event_time_epoch_seconds": len(frame)}


def epoch_milliseconds(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    milliseconds = frame["event_time"].map(lambda value: round(value.timestamp() * 1000)).astype("int64")
    write_parquet(folder, frame.assign(event_time=milliseconds))
    return {"event_time_epoch_milliseconds": len(frame), "rows_published": len(frame)}


def few_duplicates(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    repeated = frame.loc[rows(frame, 0.02)]
    write_parquet(folder, pd.concat([frame, repeated], ignore_index=True))
    return {"duplicates_dropped": len(repeated), "rows_published": len(frame)}


def returns_in_day(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    returned = rows(frame, 0.03)
    frame.loc[returned, "quantity"] = -frame.loc[returned, "quantity"]
    write_parquet(folder, frame)
    return {"returns_set_aside": len(returned), "rows_published": len(frame) - len(returned)}


SQL_IDS = ("u1'; DROP TABLE events; --", 'i1" OR "1"="1')
PATH_IDS = ("../../../etc/passwd", "..\\..\\windows\\system32", "/tmp/x;rm -rf")


def sql_characters_in_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    frame.loc[frame.index[0], "user_id"] = SQL_IDS[0]
    frame.loc[frame.index[1], "item_id"] = SQL_IDS[1]
    write_csv(folder, frame)
    return {"rows_published": len(frame)}


def path_characters_in_ids(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    frame = frame.copy()
    for offset, value in enumerate(PATH_IDS):
        frame.loc[frame.index[offset], "item_id"] = value
    write_parquet(folder, frame)
    return {"rows_published": len(frame)}


def odd_file_names(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    half = len(frame) // 2
    write_csv(folder, frame.iloc[:half], name="events'; DROP TABLE events; --.csv")
    write_parquet(folder, frame.iloc[half:], name="$(touch pwned) ..\\ü 2024.parquet")
    return {"rows_published": len(frame)}


def identical_copy(folder: Path, frame: pd.DataFrame) -> dict[str, int]:
    write_parquet(folder, frame, name="events.parquet")
    write_parquet(folder, frame, name="events (1).parquet")
    return {"identical_files_skipped": 1, "rows_published": len(frame)}


KINDS: tuple[BadKind, ...] = (
    BadKind("empty_file", "a CSV file of 0 bytes", QUARANTINED, empty_file, ("the file is empty",), "files_readable"),
    BadKind("header_only", "a CSV header without rows", QUARANTINED, header_only, ("has no rows",), "files_readable"),
    BadKind("missing_column", "item_id column absent", QUARANTINED, missing_column, ("missing required column(s) item_id",), "files_readable"),
    BadKind("renamed_column", "user_id exported as customer", QUARANTINED, renamed_column, ("missing required column(s) user_id",), "files_readable"),
    BadKind("column_name_case", "user_id exported as User_ID", QUARANTINED, column_name_case, ("'User_ID'", "lower case"), "files_readable"),
    BadKind("duplicate_header", "two columns named item_id", QUARANTINED, duplicate_header, ("appear more than once",), "files_readable"),
    BadKind("wrong_delimiter", "semicolon-separated CSV", QUARANTINED, wrong_delimiter, ("separated by semicolons",), "files_readable"),
    BadKind("latin1_text", "CSV encoded as Latin-1", QUARANTINED, latin1_text, ("not valid UTF-8", "line 7"), "files_readable"),
    BadKind("utf16_text", "CSV encoded as UTF-16", QUARANTINED, utf16_text, ("UTF-16",), "files_readable"),
    BadKind("gzip_named_csv", "gzip data with a .csv suffix", QUARANTINED, gzip_named_csv, ("gzip-compressed",), "files_readable"),
    BadKind("nul_bytes", "a NUL byte inside the text", QUARANTINED, nul_bytes, ("NUL byte",), "files_readable"),
    BadKind("truncated_parquet", "the first half of a Parquet file", QUARANTINED, truncated_parquet, ("magic bytes PAR1",), "files_readable"),
    BadKind("csv_named_parquet", "CSV text with a .parquet suffix", QUARANTINED, csv_named_parquet, ("cannot read the file as parquet",), "files_readable"),
    BadKind("broken_quote", "an opening quote that never closes", QUARANTINED, broken_quote, ("record that starts on line 11",), "files_readable"),
    BadKind("truncated_csv", "a CSV file cut inside its last line", QUARANTINED, truncated_csv, ("field(s), but the header has 8",), "files_readable"),
    BadKind("malformed_jsonl", "a JSON Lines file with a cut line", QUARANTINED, malformed_jsonl, ("cannot read the file as jsonl",), "files_readable"),
    BadKind("null_item_ids", "5% of rows without item_id", QUARANTINED, null_item_ids, ("column item_id is empty",), "files_readable"),
    BadKind("whitespace_item_ids", "item_id of spaces only", QUARANTINED, whitespace_item_ids, ("item_id is empty (only whitespace)",), "files_readable"),
    BadKind("unparseable_timestamp", "event_time 'yesterday afternoon'", QUARANTINED, unparseable_timestamp, ("row 9", "'yesterday afternoon'"), "files_readable"),
    BadKind("mixed_seconds_milliseconds", "epoch seconds and milliseconds in one file", QUARANTINED, mixed_seconds_milliseconds, ("looks like milliseconds since the Unix epoch",), "files_readable"),
    BadKind("nan_price_csv", "price 'NaN' in CSV", QUARANTINED, nan_price_csv, ("column price is NaN",), "files_readable"),
    BadKind("nan_price_parquet", "NaN prices in Parquet", QUARANTINED, nan_price_parquet, ("column price is NaN",), "files_readable"),
    BadKind("infinite_quantity", "quantity 'inf'", QUARANTINED, infinite_quantity, ("column quantity is infinite",), "files_readable"),
    BadKind("outside_symlink", "a link through '..' to a file outside the landing folder", QUARANTINED, outside_symlink, ("outside the landing folder",), "files_readable"),
    BadKind("changed_while_read", "a file appended to while it is read", QUARANTINED, changed_while_read, ("changed while it was read",), "files_readable", CHANGE_DURING_READ),
    BadKind("unknown_event_type", "event_type 'click'", QUARANTINED, unknown_event_type, ("event_type_known",), "event_type_known"),
    BadKind("other_day_timestamps", "5% of events dated the day before", QUARANTINED, other_day_timestamps, ("event_time_within_day",), "event_time_within_day"),
    BadKind("future_timestamps", "events later than the validation clock", QUARANTINED, future_timestamps, ("event_time_not_in_future",), "event_time_not_in_future", CLOCK_AT_NOON),
    BadKind("epoch_zero", "event_time 0 (the Unix epoch)", QUARANTINED, epoch_zero, ("event_time_within_day", "the Unix epoch"), "event_time_within_day"),
    BadKind("negative_price", "negative prices", QUARANTINED, negative_price, ("price_not_negative",), "price_not_negative"),
    BadKind("absurd_quantity", "a quantity of five million", QUARANTINED, absurd_quantity, ("quantity_within_limit",), "quantity_within_limit"),
    BadKind("absurd_price", "a unit price of fifty million", QUARANTINED, absurd_price, ("price_within_limit",), "price_within_limit"),
    BadKind("zero_quantity", "quantity 0", QUARANTINED, zero_quantity, ("quantity_not_zero",), "quantity_not_zero"),
    BadKind("all_rows_duplicated", "every row delivered twice", QUARANTINED, all_rows_duplicated, ("duplicate_share",), "duplicate_share"),
    BadKind("volume_spike", "twenty times the usual rows", QUARANTINED, volume_spike, ("row_volume",), "row_volume"),
    BadKind("near_empty_day", "five rows", QUARANTINED, near_empty_day, ("row_volume",), "row_volume"),
    BadKind("single_user_bot", "every event from one user", QUARANTINED, single_user_bot, ("top_user_share", "crawler-0001"), "top_user_share"),
    BadKind("ten_kilobyte_id", "a user_id of 10,240 characters", QUARANTINED, ten_kilobyte_id, ("user_id_length",), "user_id_length"),
    BadKind("line_break_in_id", "an item_id containing a line break", QUARANTINED, line_break_in_id, ("item_id_printable",), "item_id_printable"),
    BadKind("extra_columns", "two columns outside the schema", ACCEPTED, extra_columns),
    BadKind("utf8_bom", "CSV starting with a UTF-8 byte-order mark", ACCEPTED, utf8_bom),
    BadKind("crlf_line_endings", "CSV with Windows line endings", ACCEPTED, crlf_line_endings),
    BadKind("null_user_ids", "10% of rows without user_id", ACCEPTED, null_user_ids),
    BadKind("whitespace_user_ids", "user_id of spaces only", ACCEPTED, whitespace_user_ids),
    BadKind("padded_ids", "item_id with spaces around it", ACCEPTED, padded_ids),
    BadKind("event_type_letter_case", "event types in upper case", ACCEPTED, event_type_letter_case),
    BadKind("epoch_seconds", "event_time as Unix epoch seconds", ACCEPTED, epoch_seconds),
    BadKind("epoch_milliseconds", "event_time as Unix epoch milliseconds", ACCEPTED, epoch_milliseconds),
    BadKind("few_duplicates", "2% repeated rows", ACCEPTED, few_duplicates),
    BadKind("returns_in_day", "negative quantities (returns)", ACCEPTED, returns_in_day),
    BadKind("sql_characters_in_ids", "quotes and SQL in ids", ACCEPTED, sql_characters_in_ids, ids=SQL_IDS),
    BadKind("path_characters_in_ids", "'..', slashes and shell characters in ids", ACCEPTED, path_characters_in_ids, ids=PATH_IDS),
    BadKind("odd_file_names", "quotes, SQL, '$(...)' and '..' in file names", ACCEPTED, odd_file_names),
    BadKind("identical_copy", "the same file delivered twice", ACCEPTED, identical_copy),
)
"""Every kind of the corpus, by name."""

KINDS_BY_NAME: dict[str, BadKind] = {kind.name: kind for kind in KINDS}


def sample_day_frame(day: date = date(2024, 1, 5)) -> pd.DataFrame:
    """Return one synthetic day of a small shop in the canonical schema (the good day of the script)."""
    from freshrank.synthetic import ShopSpec, generate_day

    spec = ShopSpec(days=1, users=150, items=60, seed=3, start=day)
    return generate_day(spec, 0)


def write_kind(kind: BadKind, landing: Path, day: date, frame: pd.DataFrame) -> dict[str, int]:
    """Write one kind's files into ``landing/<day>/`` and return its expected counts."""
    folder = landing / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return kind.write(folder, frame.copy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the bad-increment corpus, one landing folder per kind.")
    parser.add_argument("out", type=Path, help="Folder to write <kind>/landing/<day>/ into; must not exist.")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; name a new folder")
    day = date(2024, 1, 5)
    frame = sample_day_frame(day)
    for kind in KINDS:
        write_kind(kind, args.out / kind.name / "landing", day, frame)
        print(f"{kind.name:<28} {kind.outcome:<12} {kind.description}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
