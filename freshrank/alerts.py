"""Data-quality and drift alerts: appended to ``<home>/alerts.jsonl`` and POSTed to a webhook.

Every alert is one JSON line with ``time``, ``kind``, ``day``, ``message``, ``details`` and an
optional ``key``. An alert with a key is recorded once: raising it again (a rerun of the same
failed increment, or the alert sensor seeing a check failure that the check already reported)
returns the first record. When a webhook URL is configured (``alerts.webhook_url`` or
``$FRESHRANK_ALERT_WEBHOOK_URL``), each new alert is POSTed as JSON with a Slack-compatible
``text`` field, with retries and a timeout. A webhook that still fails is recorded as an
alert of kind ``webhook_failed`` and never raises into the pipeline.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from freshrank.config import AlertsConfig, Settings

logger = logging.getLogger(__name__)

ALERTS_FILE = "alerts.jsonl"
WEBHOOK_URL_ENV_VAR = "FRESHRANK_ALERT_WEBHOOK_URL"
"""Environment variable whose value, when set, replaces ``alerts.webhook_url``."""

DATA_QUALITY = "data_quality"
"""Kind of an alert for an increment that failed validation or could not be read."""
DRIFT = "drift"
"""Kind of an alert for a drift share over the threshold."""
CHECK_FAILED = "check_failed"
"""Kind of an alert for any other failed Dagster asset check."""
RELEASED = "quarantine_released"
"""Kind of the record written when an operator releases a quarantined increment."""
WEBHOOK_FAILED = "webhook_failed"
"""Kind of the record written when an alert could not be delivered to the webhook."""

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt; other 4xx responses mean the request itself is wrong."""


def alerts_path(settings: Settings) -> Path:
    """Return the alerts log of a home."""
    return settings.home / ALERTS_FILE


def quarantine_alert_key(day: str, data_version: str) -> str:
    """Return the key of the alert for one quarantined version of a day's increment."""
    return f"{DATA_QUALITY}:{day}:{data_version}"


def drift_alert_key(day: str, model_version: str | None) -> str:
    """Return the key of the drift alert of a day, for the model whose predictions drifted."""
    return f"{DRIFT}:{day}:{model_version or 'none'}"


def raise_alert(
    settings: Settings,
    kind: str,
    day: str,
    message: str,
    details: dict | None = None,
    *,
    key: str | None = None,
) -> dict:
    """Record an alert, log it and POST it to the webhook when one is configured.

    Args:
        settings: Settings of the home whose alerts log receives the record.
        kind: Alert kind, for example :data:`DATA_QUALITY` or :data:`DRIFT`.
        day: Partition day (``YYYY-MM-DD``) the alert is about.
        message: One line for people: what failed and where to look.
        details: JSON-able numbers and paths behind the message.
        key: Identity of the alert; an alert whose key is already in the log is not recorded
            or sent again.

    Returns:
        The alert record: the new one, or the earlier record with the same key.
    """
    record = {
        "time": datetime.now(timezone.utc).isoformat(),
        "kind": kind,
        "day": day,
        "message": message,
        "details": details or {},
    }
    if key is not None:
        record["key"] = key
    existing = _append_unless_key_exists(alerts_path(settings), record)
    if existing is not None:
        logger.info("%s alert for %s was already raised at %s (key %s)", kind, day, existing.get("time"), key)
        return existing
    logger.warning("%s alert for %s: %s", kind, day, message)
    delivery = send_webhook(settings.alerts, record)
    if delivery is not None and not delivery.delivered:
        _record_webhook_failure(settings, record, delivery)
    return record


def read_alerts(settings: Settings, kind: str | None = None, day: str | None = None) -> list[dict]:
    """Return the alerts of a home, oldest first, optionally only one kind or one day.

    A line that is not valid JSON (a write cut short by a crash) is skipped with a warning
    that names its line number.
    """
    path = alerts_path(settings)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            logger.warning("%s line %d is not valid JSON and was skipped: %s", path, number, exc)
            continue
        if (kind is None or record.get("kind") == kind) and (day is None or record.get("day") == day):
            records.append(record)
    return records


# --- The log file ------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the log, so the key check and the append are one step.

    Runs, the alert sensor and the CLI may write alerts from different processes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _append_unless_key_exists(path: Path, record: dict) -> dict | None:
    """Append ``record`` as one line; return the earlier record instead when its key is taken."""
    line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
    with _locked(path):
        key = record.get("key")
        if key is not None and path.exists():
            for earlier in _records_with_key(path, key):
                return earlier
        with open(path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    # The last write was cut short; start on a new line so this record stays readable.
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    return None


def _records_with_key(path: Path, key: str) -> Iterator[dict]:
    needle = json.dumps(key, ensure_ascii=False)
    for line in path.read_text(encoding="utf-8").splitlines():
        if needle not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("key") == key:
            yield record


# --- The webhook -------------------------------------------------------------------------------


@dataclass
class WebhookDelivery:
    """Outcome of sending one alert to the webhook."""

    delivered: bool
    attempts: int
    status: int | None = None
    """HTTP status of the last response; None when no response came (connection error, timeout)."""
    errors: list[str] = field(default_factory=list)
    """One line per failed attempt."""


def webhook_url(config: AlertsConfig) -> str | None:
    """Return the webhook URL: ``$FRESHRANK_ALERT_WEBHOOK_URL`` when set, else the configured one."""
    from_env = os.environ.get(WEBHOOK_URL_ENV_VAR, "").strip()
    return from_env or config.webhook_url


def alert_text(record: dict) -> str:
    """Format an alert as the one-line ``text`` of a Slack message."""
    return f"[freshrank] {record['kind']} alert for {record['day']}: {record['message']}"


def send_webhook(config: AlertsConfig, record: dict) -> WebhookDelivery | None:
    """POST one alert to the webhook, retrying with exponential backoff.

    Connection errors, timeouts and HTTP 408, 425, 429 and 5xx responses are retried up to
    ``config.webhook_retries`` times, waiting ``webhook_backoff_seconds`` and then twice as
    long before each further try. Other HTTP errors are not retried, because repeating the
    same request cannot fix them. Nothing is raised: the outcome says what happened.

    Returns:
        The delivery outcome, or None when no webhook is configured.
    """
    url = webhook_url(config)
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        return WebhookDelivery(False, 0, errors=[f"webhook URL of {_host(url)} must start with http:// or https://"])
    payload = {"text": alert_text(record)}
    if config.webhook_include_alert:
        payload["alert"] = record
    body = json.dumps(payload, default=str).encode("utf-8")
    delivery = WebhookDelivery(delivered=False, attempts=0)
    wait = config.webhook_backoff_seconds
    for attempt in range(1, config.webhook_retries + 2):
        delivery.attempts = attempt
        retry = _post_once(url, body, config.webhook_timeout_seconds, delivery)
        if delivery.delivered or not retry or attempt > config.webhook_retries:
            break
        logger.warning(
            "webhook POST to %s failed (attempt %d of %d): %s; retrying in %.2f s",
            _host(url), attempt, config.webhook_retries + 1, delivery.errors[-1], wait,
        )
        time.sleep(wait)
        wait *= 2
    return delivery


def _post_once(url: str, body: bytes, timeout: float, delivery: WebhookDelivery) -> bool:
    """POST once and record the outcome in ``delivery``; return whether a retry may help."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "freshrank-alerts"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            delivery.status = response.status
            response.read()
        delivery.delivered = True
        return False
    except urllib.error.HTTPError as exc:
        delivery.status = exc.code
        delivery.errors.append(f"HTTP {exc.code} {exc.reason}")
        return exc.code in _RETRY_STATUSES
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # Connection refused or reset, timeouts and malformed responses may pass on a later try.
        delivery.status = None
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        delivery.errors.append(f"{type(reason).__name__}: {reason}")
        return True
    except ValueError as exc:
        # urllib raises ValueError (http.client.InvalidURL) for a URL it cannot parse. Its
        # message may quote the URL, which can contain a secret token, so only the type is kept.
        delivery.status = None
        delivery.errors.append(f"invalid webhook URL ({type(exc).__name__}); check alerts.webhook_url")
        return False


def _host(url: str) -> str:
    """Return scheme and host of a URL for logs; the path of a Slack webhook URL is a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "(invalid URL)"


def _record_webhook_failure(settings: Settings, record: dict, delivery: WebhookDelivery) -> None:
    """Append a ``webhook_failed`` record for an alert that could not be delivered; it is not sent."""
    url = webhook_url(settings.alerts) or ""
    failure = {
        "time": datetime.now(timezone.utc).isoformat(),
        "kind": WEBHOOK_FAILED,
        "day": record["day"],
        "message": (
            f"could not deliver the {record['kind']} alert of {record['day']} to {_host(url)} "
            f"after {delivery.attempts} attempt(s): {delivery.errors[-1] if delivery.errors else 'unknown error'}"
        ),
        "details": {
            "alert_time": record["time"],
            "alert_kind": record["kind"],
            "alert_key": record.get("key"),
            "attempts": delivery.attempts,
            "status": delivery.status,
            "errors": delivery.errors,
        },
    }
    logger.error("%s", failure["message"])
    _append_unless_key_exists(alerts_path(settings), failure)
