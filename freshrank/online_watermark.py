"""The online store's watermark: the feature day whose partitions the online store reflects.

After each successful online write, ``write_watermark`` stores which day the online store
now reflects, with the size, mtime and inode of each of that day's Parquet partitions and a
fingerprint of the feature configuration. The next day's write compares partition ``d``
with partition ``d - 1`` and writes only the changed rows, which is correct only if the
online store contains exactly partition ``d - 1`` and that file has not been rewritten since.

The Redis watermark is a key of the Redis database, so a flushed Redis loses it together
with the rows. The SQLite watermark is a JSON file next to the database file; it names the
database file's device and inode, so a deleted or replaced database invalidates it. It is
kept out of the database so that the database contains only Feast's rows.

A write leaves the previous watermark in place until it succeeds. That is safe because
every row a write puts in before it fails is either the row the watermark already claims
(a diff write of ``d`` rewrites rows of ``d`` over an exact ``d - 1``, and its rerun repeats
the same diff) or comes from a write the watermark's checks already reject (another day,
a rewritten partition, other feature settings), so the next write is a full one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from feast import RepoConfig

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.features import FEATURE_VIEWS, epoch_us, feature_columns, feature_timestamp, partition_path

logger = logging.getLogger(__name__)

_RECORD_VERSION = 1


@dataclass(frozen=True)
class OnlineWatermark:
    """The feature day an online store reflects.

    Attributes:
        day: The feature day (ISO date) whose partitions the online store contains.
        partitions: Per feature view, the signature (path, size, mtime_ns, inode) of the
            partition file that was written.
        feature_config: Fingerprint of the feature columns and settings the rows follow.
        mode: How the write that set it ran: ``diff`` or ``full``.
        written_at: UTC time of that write.
        store_file: For SQLite, the device and inode of the database file written; empty for Redis.
    """

    day: str
    partitions: dict[str, dict]
    feature_config: str
    mode: str
    written_at: str
    store_file: dict = field(default_factory=dict)

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
            store_file=dict(data.get("store_file") or {}),
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


def read_watermark(config: RepoConfig, same_store_file: bool = True) -> OnlineWatermark | None:
    """Return the online store's watermark, or None when there is none or its SQLite file was replaced.

    Args:
        config: Feast configuration of the home.
        same_store_file: Return None when the SQLite file is not the one the watermark was
            written for (it was replaced or copied). A diff write needs that; the day the
            rows reflect does not, since a copy contains the same rows.

    Raises:
        FeatureStoreError: The stored record cannot be parsed; clear it with
            ``clear_watermark`` (the next write is then a full one).
    """
    text = _read_redis(config) if _is_redis(config) else _read_sqlite(config)
    if text is None:
        return None
    try:
        watermark = OnlineWatermark.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureStoreError(
            f"the online watermark in {_describe(config)} is invalid ({exc}); "
            "delete it with freshrank.online_watermark.clear_watermark so that the next online write is a full one"
        ) from exc
    if same_store_file and not _is_redis(config) and watermark.store_file != _sqlite_identity(config):
        logger.debug("ignoring the online watermark of %s: the database file was replaced since it was written", watermark.day)
        return None
    return watermark


def write_watermark(config: RepoConfig, watermark: OnlineWatermark) -> None:
    """Store the watermark, replacing the previous one atomically."""
    if _is_redis(config):
        _redis_client(config).set(_redis_key(config), watermark.to_json())
    else:
        target = _sqlite_watermark_path(config)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(replace(watermark, store_file=_sqlite_identity(config)).to_json())
        os.replace(temporary, target)
    logger.info("online store %s reflects feature day %s (%s write)", _describe(config), watermark.day, watermark.mode)


def clear_watermark(config: RepoConfig) -> None:
    """Delete the watermark, so that the next write is a full one."""
    if _is_redis(config):
        _redis_client(config).delete(_redis_key(config))
    else:
        _sqlite_watermark_path(config).unlink(missing_ok=True)


def online_as_of_us(config: RepoConfig, zone: ZoneInfo) -> float | None:
    """Return the feature timestamp of the day the online store reflects, in Unix epoch microseconds.

    A copied SQLite file still reflects the watermark's day, so its identity is not checked here.
    None when the store has no watermark (not yet written with watermarks).
    """
    watermark = read_watermark(config, same_store_file=False)
    if watermark is None:
        return None
    return epoch_us(feature_timestamp(date.fromisoformat(watermark.day), zone))


def _is_redis(config: RepoConfig) -> bool:
    return config.online_store.type == "redis"


def _describe(config: RepoConfig) -> str:
    if _is_redis(config):
        return f"Redis {config.online_store.connection_string} key {_redis_key(config)}"
    return str(_sqlite_watermark_path(config))


def _redis_key(config: RepoConfig) -> str:
    return f"freshrank:{config.project}:online_watermark"


_REDIS_CLIENTS: dict[str, object] = {}


def _redis_client(config: RepoConfig):
    """Return a client of the Redis online store, one per connection string (each owns a connection pool)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    key = config.online_store.connection_string
    client = _REDIS_CLIENTS.get(key)
    if client is None:
        client = _REDIS_CLIENTS[key] = RedisOnlineStore()._get_client(config.online_store)
    return client


def _read_redis(config: RepoConfig) -> str | None:
    value = _redis_client(config).get(_redis_key(config))
    return None if value is None else value.decode()


def _sqlite_watermark_path(config: RepoConfig) -> Path:
    database = Path(config.online_store.path)
    return database.with_name(f"{database.name}.watermark.json")


def _sqlite_identity(config: RepoConfig) -> dict:
    """Return the device and inode of the SQLite database file, or {} when it does not exist."""
    try:
        stat = Path(config.online_store.path).stat()
    except FileNotFoundError:
        return {}
    return {"device": stat.st_dev, "inode": stat.st_ino}


def _read_sqlite(config: RepoConfig) -> str | None:
    try:
        return _sqlite_watermark_path(config).read_text()
    except FileNotFoundError:
        return None
