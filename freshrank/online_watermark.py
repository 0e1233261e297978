"""The online store's watermark: the feature day whose partitions the online store reflects.

After each successful online write, ``write_watermark`` stores which day the online store
now reflects, with the size, mtime and inode of each of that day's Parquet partitions and a
fingerprint of the feature configuration. The next day's write compares partition ``d``
with partition ``d - 1`` and writes only the changed rows, which is correct only if the
online store holds exactly partition ``d - 1`` and that file has not been rewritten since.

The record lives inside the online store itself (a table of the SQLite file, a key of the
Redis database), so a deleted SQLite file or a flushed Redis loses the watermark together
with the rows and the next write is a full one. A write clears the watermark before it
starts, so a write that fails halfway leaves none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from feast import RepoConfig

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.features import FEATURE_VIEWS, feature_columns, feature_timestamp, partition_path

logger = logging.getLogger(__name__)

_SQLITE_TABLE = "freshrank_online_watermark"
_RECORD_VERSION = 1


@dataclass(frozen=True)
class OnlineWatermark:
    """The feature day an online store reflects.

    Attributes:
        day: The feature day (ISO date) whose partitions the online store holds.
        partitions: Per feature view, the signature (path, size, mtime_ns, inode) of the
            partition file that was written.
        feature_config: Fingerprint of the feature columns and settings the rows follow.
        mode: How the write that set it ran: ``diff`` or ``full``.
        written_at: UTC time of that write.
    """

    day: str
    partitions: dict[str, dict]
    feature_config: str
    mode: str
    written_at: str

    def to_json(self) -> str:
        """Return the record as JSON text."""
        return json.dumps({"version": _RECORD_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OnlineWatermark:
        """Parse a record written by ``to_json``.

        Raises:
            ValueError: The text is not such a record.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _RECORD_VERSION:
            raise ValueError(f"unknown online watermark record {text[:200]!r}")
        return cls(
            day=str(data["day"]),
            partitions=dict(data["partitions"]),
            feature_config=str(data["feature_config"]),
            mode=str(data["mode"]),
            written_at=str(data["written_at"]),
        )


def partition_signature(path: Path) -> dict:
    """Return what identifies one version of a partition file; an atomic replace changes it."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def feature_config_fingerprint(settings: Settings) -> str:
    """Return a hash of the stored feature columns and the feature settings behind them."""
    content = {
        "columns": {view: feature_columns(view, settings.features) for view in FEATURE_VIEWS},
        "features": settings.features.model_dump(mode="json"),
        "timezone": settings.timezone,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def watermark_for(settings: Settings, day: date, mode: str) -> OnlineWatermark:
    """Build the watermark of an online store that now reflects the partitions of ``day``."""
    return OnlineWatermark(
        day=day.isoformat(),
        partitions={view: partition_signature(partition_path(settings.offline_dir, view, day)) for view in FEATURE_VIEWS},
        feature_config=feature_config_fingerprint(settings),
        mode=mode,
        written_at=datetime.now(timezone.utc).isoformat(),
    )


def read_watermark(config: RepoConfig) -> OnlineWatermark | None:
    """Return the watermark stored in the online store, or None when there is none.

    Raises:
        FeatureStoreError: The stored record cannot be parsed; clear it with
            ``clear_watermark`` (the next write is then a full one).
    """
    text = _read_redis(config) if _is_redis(config) else _read_sqlite(config)
    if text is None:
        return None
    try:
        return OnlineWatermark.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureStoreError(
            f"the online watermark in {_describe(config)} is invalid ({exc}); "
            "delete it with freshrank.online_watermark.clear_watermark so that the next online write is a full one"
        ) from exc


def write_watermark(config: RepoConfig, watermark: OnlineWatermark) -> None:
    """Store the watermark, replacing the previous one in one statement."""
    if _is_redis(config):
        _redis_client(config).set(_redis_key(config), watermark.to_json())
    else:
        with _sqlite(config) as connection:
            connection.execute(f"INSERT OR REPLACE INTO {_SQLITE_TABLE} (id, record) VALUES (1, ?)", (watermark.to_json(),))
    logger.info("online store %s reflects feature day %s (%s write)", _describe(config), watermark.day, watermark.mode)


def clear_watermark(config: RepoConfig) -> None:
    """Delete the watermark, so that the next write is a full one."""
    if _is_redis(config):
        _redis_client(config).delete(_redis_key(config))
    else:
        with _sqlite(config) as connection:
            connection.execute(f"DELETE FROM {_SQLITE_TABLE}")


def online_as_of_us(config: RepoConfig, zone) -> float | None:
    """Return the feature timestamp of the day the online store reflects, in Unix epoch microseconds.

    None when the store has no watermark (never written by this version, or a write is running).
    """
    from freshrank.features import epoch_us

    watermark = read_watermark(config)
    if watermark is None:
        return None
    return epoch_us(feature_timestamp(date.fromisoformat(watermark.day), zone))


def _is_redis(config: RepoConfig) -> bool:
    return config.online_store.type == "redis"


def _describe(config: RepoConfig) -> str:
    if _is_redis(config):
        return f"Redis {config.online_store.connection_string} key {_redis_key(config)}"
    return f"SQLite {config.online_store.path} table {_SQLITE_TABLE}"


def _redis_key(config: RepoConfig) -> str:
    return f"freshrank:{config.project}:online_watermark"


def _redis_client(config: RepoConfig):
    from feast.infra.online_stores.redis import RedisOnlineStore

    return RedisOnlineStore()._get_client(config.online_store)


def _read_redis(config: RepoConfig) -> str | None:
    value = _redis_client(config).get(_redis_key(config))
    return None if value is None else value.decode()


class _sqlite:
    """A connection to the SQLite online store with the watermark table, committed on success."""

    def __init__(self, config: RepoConfig) -> None:
        self.path = Path(config.online_store.path)

    def __enter__(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=60)
        self.connection.execute(
            f"CREATE TABLE IF NOT EXISTS {_SQLITE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL)"
        )
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self.connection.commit()
        finally:
            self.connection.close()


def _read_sqlite(config: RepoConfig) -> str | None:
    path = Path(config.online_store.path)
    if not path.exists():
        return None
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        row = connection.execute(
            f"SELECT record FROM {_SQLITE_TABLE} WHERE id = 1"
        ).fetchone() if _has_table(connection) else None
    finally:
        connection.close()
    return None if row is None else str(row[0])


def _has_table(connection: sqlite3.Connection) -> bool:
    found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_SQLITE_TABLE,)).fetchone()
    return found is not None
