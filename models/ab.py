"""A/B split of users between two model versions, the request log, and the report that compares them.

A user's variant is a pure function of the user id and the split settings. A BLAKE2b hash of
the salt and the user id, read as a fraction in [0, 1), puts the user in the treatment when it
is below ``serving.ab.treatment_share``. So a user keeps the variant on every request, in every
worker process and across restarts, for as long as the salt and the share stay the same.

The request log has one JSON object per ranked request, with these fields and nothing else
(no query text, no client address)::

    {"ts": "2024-01-05T10:00:00.000000+00:00", "request_id": "3f2a...", "endpoint": "rank",
     "user_id": "u000042", "variant": "control", "model_version": "v0004-2024-01-04",
     "item_ids": ["i000007", "i000003", ...]}

``item_ids`` are the ranked items, best first, cut at ``serving.request_log_items``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from freshrank.config import ABConfig, Settings
from freshrank.errors import RequestLogError
from freshrank.warehouse import connect

logger = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("control", "treatment")
"""Variant names: ``control`` is ranked by the champion, ``treatment`` by ``serving.ab.treatment_version``."""
ENDPOINTS: tuple[str, ...] = ("rank", "recommend", "search")
"""Endpoints whose requests are logged."""
LOG_FIELDS: tuple[str, ...] = ("ts", "request_id", "endpoint", "user_id", "variant", "model_version", "item_ids")
"""Fields of a request log line, all required."""
DEFAULT_HORIZON_HOURS = 168.0
"""Hours after a request in which a purchase counts for it (one week)."""


def user_fraction(user_id: str, salt: str) -> float:
    """Return a fraction in [0, 1) fixed by the salt and the user id (BLAKE2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_variant(user_id: str, config: ABConfig) -> str:
    """Return ``treatment`` for the configured share of users and ``control`` for the rest.

    Without a ``treatment_version`` every user is in the control.
    """
    if config.treatment_version is None or config.treatment_share <= 0.0:
        return "control"
    return "treatment" if user_fraction(user_id, config.salt) < config.treatment_share else "control"


def request_log_path(settings: Settings) -> Path | None:
    """Return the home's request log file, or None when ``serving.request_log`` is empty."""
    if not settings.serving.request_log:
        return None
    return settings.home / settings.serving.request_log


class RequestLog:
    """Appends one JSON line per ranked request to a file.

    Each line goes out in one ``write`` on a file opened with ``O_APPEND``, so lines of
    concurrent writers (threads or worker processes) land whole at the end of the file.

    Args:
        path: The log file; its folder is created.
        max_items: Ranked item ids kept per line, from the top.
    """

    def __init__(self, path: Path, max_items: int) -> None:
        self.path = Path(path)
        self.max_items = max_items
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(
        self,
        *,
        endpoint: str,
        request_id: str,
        user_id: str,
        variant: str,
        model_version: str,
        item_ids: list[str],
        at: datetime | None = None,
    ) -> None:
        """Append one request; ``at`` defaults to now (UTC)."""
        record = {
            "ts": (at or datetime.now(timezone.utc)).isoformat(timespec="microseconds"),
            "request_id": request_id,
            "endpoint": endpoint,
            "user_id": user_id,
            "variant": variant,
            "model_version": model_version,
            "item_ids": item_ids[: self.max_items],
        }
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise RequestLogError(f"{self.path}: the request log is closed")
            os.write(self._fd, line)

    def close(self) -> None:
        """Close the file; later writes raise RequestLogError."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_request_log(path: Path) -> pd.DataFrame:
    """Read and check a request log.

    Returns:
        One row per request with the ``LOG_FIELDS`` columns; ``ts`` is a UTC timestamp.

    Raises:
        RequestLogError: The file is missing, or a line is not a JSON object with every field
            of the right type (the message names the line).
    """
    path = Path(path)
    if not path.exists():
        raise RequestLogError(f"{path}: no request log; run `freshrank serve` and send requests first")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                records.append(_parse_line(path, number, line))
    frame = pd.DataFrame(records, columns=list(LOG_FIELDS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _parse_line(path: Path, number: int, line: str) -> dict:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestLogError(f"{where}: invalid JSON ({exc}); fix or delete the line") from exc
    if not isinstance(record, dict):
        raise RequestLogError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [name for name in LOG_FIELDS if name not in record]
    if missing:
        raise RequestLogError(f"{where}: missing fields {missing}; every line needs {list(LOG_FIELDS)}")
    for name in ("request_id", "user_id", "model_version"):
        if not isinstance(record[name], str) or not record[name]:
            raise RequestLogError(f"{where}: {name} must be a non-empty string, got {record[name]!r}")
    if record["variant"] not in VARIANTS:
        raise RequestLogError(f"{where}: variant must be one of {list(VARIANTS)}, got {record['variant']!r}")
    if record["endpoint"] not in ENDPOINTS:
        raise RequestLogError(f"{where}: endpoint must be one of {list(ENDPOINTS)}, got {record['endpoint']!r}")
    items = record["item_ids"]
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise RequestLogError(f"{where}: item_ids must be a list of strings")
    try:
        stamp = datetime.fromisoformat(record["ts"])
    except (TypeError, ValueError) as exc:
        raise RequestLogError(f"{where}: ts {record['ts']!r} is not an ISO 8601 timestamp") from exc
    if stamp.tzinfo is None:
        raise RequestLogError(f"{where}: ts {record['ts']!r} has no UTC offset")
    return {name: record[name] for name in LOG_FIELDS}


@dataclass(frozen=True)
class VariantOutcome:
    """Purchases that followed the requests of one variant.

    Attributes:
        variant: ``control`` or ``treatment``.
        model_versions: Versions that ranked the variant's requests.
        requests: Logged requests.
        users: Distinct users.
        converted_requests: Requests followed within the horizon by any purchase of the user.
        hit_requests: Requests followed within the horizon by a purchase of a ranked item.
        purchased_ranked_items: (request, ranked item) pairs purchased within the horizon.
        mean_reciprocal_rank: Mean over requests of 1 / rank of the best-ranked purchased item (0 without one).
        incomplete_requests: Requests whose horizon ends after the newest event in the warehouse.
    """

    variant: str
    model_versions: list[str]
    requests: int
    users: int
    converted_requests: int
    hit_requests: int
    purchased_ranked_items: int
    mean_reciprocal_rank: float
    incomplete_requests: int

    @property
    def conversion_rate(self) -> float:
        """Share of requests followed by any purchase of the user."""
        return self.converted_requests / self.requests if self.requests else 0.0

    @property
    def hit_rate(self) -> float:
        """Share of requests followed by a purchase of one of their ranked items."""
        return self.hit_requests / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class ABReport:
    """Comparison of the variants on later purchases.

    Attributes:
        log_path: The request log read.
        horizon_hours: Hours after a request in which a purchase counts.
        variants: One outcome per variant present in the log, control first.
        users_in_both_variants: Users logged in both variants (the split changed during the log).
        hit_rate_z: Two-proportion z statistic of treatment minus control hit rate, or None.
        hit_rate_p_value: Its two-sided p-value, or None.
        newest_event: Newest event time in the warehouse (ISO), or None.
    """

    log_path: str
    horizon_hours: float
    variants: list[VariantOutcome]
    users_in_both_variants: int
    hit_rate_z: float | None
    hit_rate_p_value: float | None
    newest_event: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data, with the rates included."""
        data = asdict(self)
        for outcome, row in zip(self.variants, data["variants"]):
            row["conversion_rate"] = outcome.conversion_rate
            row["hit_rate"] = outcome.hit_rate
        return data


_CONVERTED_SQL = """
SELECT DISTINCT r.request_id
FROM logged_requests AS r
JOIN events AS e
  ON e.user_id = r.user_id AND e.event_type = 'purchase'
 AND e.event_time > r.ts AND e.event_time <= r.horizon_end
"""

_HITS_SQL = """
SELECT s.request_id, min(s.position) AS best_position, count(DISTINCT s.item_id) AS purchased_items
FROM ranked_items AS s
JOIN events AS e
  ON e.user_id = s.user_id AND e.item_id = s.item_id AND e.event_type = 'purchase'
 AND e.event_time > s.ts AND e.event_time <= s.horizon_end
GROUP BY s.request_id
"""


def ab_report(settings: Settings, horizon_hours: float = DEFAULT_HORIZON_HOURS, log_path: Path | None = None) -> ABReport:
    """Compare the variants of a request log on the purchases that followed each request.

    A purchase counts for a request when the same user bought within ``horizon_hours`` after
    the request. It is a hit when the item was among the request's ranked items. The log goes
    to DuckDB as registered data frames, so no value from a request is put into SQL text.

    Args:
        settings: Settings of the home whose warehouse holds the purchases.
        horizon_hours: Hours after a request in which a purchase counts; must be positive.
        log_path: Request log to read [default: ``serving.request_log`` under the home].

    Raises:
        RequestLogError: The log is missing, invalid or empty, or the request log is turned off.
        ValueError: ``horizon_hours`` is not positive.
    """
    if not horizon_hours > 0:
        raise ValueError(f"horizon_hours must be positive, got {horizon_hours}")
    path = log_path or request_log_path(settings)
    if path is None:
        raise RequestLogError("serving.request_log is empty, so no requests were logged; set it and serve again")
    requests = read_request_log(path)
    if requests.empty:
        raise RequestLogError(f"{path} contains no requests yet; send requests to `freshrank serve` first")
    if not settings.warehouse_path.exists():
        raise RequestLogError(f"no warehouse at {settings.warehouse_path}; the report needs its purchases")
    requests["horizon_end"] = requests["ts"] + pd.Timedelta(hours=horizon_hours)
    ranked = _ranked_items(requests)
    with connect(settings.warehouse_path, read_only=True) as con:
        con.register("logged_requests", requests[["request_id", "user_id", "ts", "horizon_end"]])
        con.register("ranked_items", ranked)
        converted = set(con.execute(_CONVERTED_SQL).fetchdf()["request_id"])
        hits = con.execute(_HITS_SQL).fetchdf().set_index("request_id")
        newest = con.execute("SELECT max(event_time) FROM events").fetchone()[0]
    newest_event = pd.Timestamp(newest) if newest is not None else None
    requests["converted"] = requests["request_id"].isin(converted)
    requests["best_position"] = requests["request_id"].map(hits["best_position"]).astype("float64")
    requests["purchased_items"] = requests["request_id"].map(hits["purchased_items"]).fillna(0).astype(int)
    requests["incomplete"] = newest_event is None or requests["horizon_end"] > newest_event
    outcomes = [_variant_outcome(variant, group) for variant, group in requests.groupby("variant", sort=False)]
    outcomes.sort(key=lambda outcome: VARIANTS.index(outcome.variant))
    z, p_value = _compare_hit_rates(outcomes)
    both = requests.groupby("user_id")["variant"].nunique()
    return ABReport(
        log_path=str(path),
        horizon_hours=horizon_hours,
        variants=outcomes,
        users_in_both_variants=int((both > 1).sum()),
        hit_rate_z=z,
        hit_rate_p_value=p_value,
        newest_event=None if newest_event is None else newest_event.isoformat(),
        notes=_notes(outcomes),
    )


def _ranked_items(requests: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (request, ranked item) with the item's 1-based rank."""
    ranked = requests[["request_id", "user_id", "ts", "horizon_end", "item_ids"]].explode("item_ids")
    ranked = ranked.dropna(subset=["item_ids"]).rename(columns={"item_ids": "item_id"})
    ranked["position"] = ranked.groupby("request_id", sort=False).cumcount() + 1
    return ranked.reset_index(drop=True)


def _variant_outcome(variant: str, group: pd.DataFrame) -> VariantOutcome:
    reciprocal = (1.0 / group["best_position"]).fillna(0.0)
    return VariantOutcome(
        variant=str(variant),
        model_versions=sorted(group["model_version"].unique().tolist()),
        requests=len(group),
        users=int(group["user_id"].nunique()),
        converted_requests=int(group["converted"].sum()),
        hit_requests=int(group["best_position"].notna().sum()),
        purchased_ranked_items=int(group["purchased_items"].sum()),
        mean_reciprocal_rank=float(reciprocal.mean()),
        incomplete_requests=int(group["incomplete"].sum()),
    )


def two_proportion_z(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> tuple[float, float] | None:
    """Return the pooled two-proportion z statistic of b minus a and its two-sided p-value.

    Returns None when either group is empty or the pooled proportion is 0 or 1 (no variance).
    """
    if trials_a == 0 or trials_b == 0:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        return None
    z = (successes_b / trials_b - successes_a / trials_a) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))


def _compare_hit_rates(outcomes: list[VariantOutcome]) -> tuple[float | None, float | None]:
    by_name = {outcome.variant: outcome for outcome in outcomes}
    if set(by_name) != set(VARIANTS):
        return None, None
    control, treatment = by_name["control"], by_name["treatment"]
    result = two_proportion_z(control.hit_requests, control.requests, treatment.hit_requests, treatment.requests)
    return (None, None) if result is None else result


def _notes(outcomes: list[VariantOutcome]) -> list[str]:
    notes = []
    for outcome in outcomes:
        if outcome.incomplete_requests:
            notes.append(
                f"{outcome.incomplete_requests} of {outcome.requests} {outcome.variant} requests have a horizon that "
                "ends after the newest warehouse event, so their purchases may still be missing"
            )
    if len(outcomes) < 2:
        notes.append("the log holds one variant only; set serving.ab.treatment_version and treatment_share to compare two")
    return notes
