"""Importer of OTTO session files: JSON Lines, one shopping session per line.

Each line is ``{"session": N, "events": [{"aid": A, "ts": T, "type": K}, ...]}`` with the
item id ``aid``, the event time ``ts`` in milliseconds since the Unix epoch (UTC), and the
type ``clicks``, ``carts`` or ``orders``. The session is the user, because OTTO
publishes no user ids: ``user_id`` and ``session_id`` are both the session number. OTTO
carries no prices, categories or quantities, so every event has quantity 1 and null price
and category. The shop is in Germany, so the default business timezone is Europe/Berlin.
Files ending in ``.gz`` are read through gzip.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from freshrank.errors import ImportFormatError
from freshrank.importers.landing import SourceRows, to_canonical

logger = logging.getLogger(__name__)

EVENT_TYPE_MAP: dict[str, str] = {"clicks": "view", "carts": "add_to_cart", "orders": "purchase"}
"""OTTO event type -> canonical event type."""

SESSION_KEYS: tuple[str, ...] = ("session", "events")
EVENT_KEYS: tuple[str, ...] = ("aid", "ts", "type")
LAYOUT = (
    'OTTO layout: JSON Lines, one session per line, {"session": N, "events": '
    '[{"aid": ITEM, "ts": MILLISECONDS, "type": "clicks"|"carts"|"orders"}, ...]}'
)


def read_otto(source: Path, timezone: str) -> SourceRows:
    """Read an OTTO JSON Lines file into canonical view, add_to_cart and purchase rows.

    Args:
        source: A ``.jsonl`` file (or ``.jsonl.gz``) in the OTTO layout.
        timezone: Business timezone of the import. OTTO timestamps are absolute
            instants, so it does not change how they are read.

    Returns:
        Canonical rows, the number of events read, and the rows set aside (none: every
        valid event is kept).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ImportFormatError: A line is not JSON or lacks a key, or an event has an unknown
            type or a non-integer id or timestamp. The error names the line and the value.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: file not found; pass the path of the OTTO .jsonl file")

    sessions: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    types: list[str] = []
    with _open_text(source) as handle:
        for line_number, session in _sessions(handle, source):
            session_id = _integer_text(session["session"], source, line_number, "session")
            for event in session["events"]:
                aid, ts, kind = _event_fields(event, source, line_number)
                sessions.append(session_id)
                items.append(aid)
                stamps.append(ts)
                types.append(kind)

    logger.info("read %d events in %d sessions from %s (timezone %s)", len(items), len(set(sessions)), source, timezone)
    frame = pd.DataFrame(
        {
            "event_time": pd.to_datetime(np.asarray(stamps, dtype="int64"), unit="ms", utc=True),
            "user_id": sessions,
            "item_id": items,
            "event_type": types,
            "quantity": 1.0,
            "price": np.nan,
            "category": pd.Series(pd.NA, index=range(len(items)), dtype="string"),
            "session_id": sessions,
        }
    )
    return SourceRows(frame=to_canonical(frame), rows_read=len(items), set_aside={})


def _open_text(source: Path) -> IO[str]:
    if source.suffix == ".gz":
        return gzip.open(source, "rt", encoding="utf-8")
    return source.open("r", encoding="utf-8")


def _sessions(handle: IO[str], source: Path) -> Iterator[tuple[int, dict]]:
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            session = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(
                f"{source}: line {line_number}: invalid JSON ({exc}). Expected the {LAYOUT}."
            ) from exc
        if not isinstance(session, dict):
            raise ImportFormatError(f"{source}: line {line_number}: expected a JSON object. Expected the {LAYOUT}.")
        _require_keys(session, SESSION_KEYS, source, line_number, "session")
        if not isinstance(session["events"], list):
            raise ImportFormatError(
                f"{source}: line {line_number}: 'events' is {type(session['events']).__name__}, "
                f"not a list. Expected the {LAYOUT}."
            )
        yield line_number, session


def _event_fields(event: object, source: Path, line_number: int) -> tuple[str, int, str]:
    if not isinstance(event, dict):
        raise ImportFormatError(f"{source}: line {line_number}: an event is not a JSON object. Expected the {LAYOUT}.")
    _require_keys(event, EVENT_KEYS, source, line_number, "event")

    kind = event["type"]
    if kind not in EVENT_TYPE_MAP:
        raise ImportFormatError(
            f"{source}: line {line_number}: unknown event type {kind!r}; "
            f"expected one of {sorted(EVENT_TYPE_MAP)}. Fix or remove the event and import again."
        )
    aid = _integer_text(event["aid"], source, line_number, "aid")
    ts = int(_integer_text(event["ts"], source, line_number, "ts"))
    return aid, ts, EVENT_TYPE_MAP[kind]


def _require_keys(obj: dict, keys: tuple[str, ...], source: Path, line_number: int, object_name: str) -> None:
    missing = [key for key in keys if key not in obj]
    if missing:
        raise ImportFormatError(
            f"{source}: line {line_number}: {object_name} is missing keys {missing}. Expected the {LAYOUT}."
        )


def _integer_text(value: object, source: Path, line_number: int, key: str) -> str:
    # bool is a subclass of int in Python, but JSON true and false are not ids.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return value.strip()
    raise ImportFormatError(
        f"{source}: line {line_number}: {key} value {value!r} is not an integer. Expected the {LAYOUT}."
    )
