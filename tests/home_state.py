"""Digests of a freshrank home's data state, for tests that compare homes before and after a run.

Each part hashes content, not files: warehouse tables row by row (without the publish time),
online store rows, feature and training Parquet files byte for byte, and the registry's
models and champion. Times of day at which something was written are left out, so two
runs over the same data at different moments have equal states.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import duckdb

from freshrank.config import Settings

WAREHOUSE_QUERIES: dict[str, str] = {
    "events": "SELECT * FROM events ORDER BY ALL",
    "returns": "SELECT * FROM returns ORDER BY ALL",
    "partitions": "SELECT * EXCLUDE (published_at) FROM partitions ORDER BY ALL",
}
"""Warehouse tables and the query whose rows stand for each; ``published_at`` is a wall-clock time."""


@dataclass(frozen=True)
class HomeState:
    """Digests of the parts of a home that a day's run changes."""

    warehouse: dict[str, str]
    """Digest of each warehouse table's rows."""
    online: dict[str, str]
    """Digest of each online store table's rows."""
    offline: dict[str, str]
    """Digest of each feature Parquet file, by path relative to the offline folder."""
    training_rows: dict[str, str]
    """Digest of each training-rows Parquet file, by name."""
    models: dict[str, str]
    """Digest of each registered model file, by version."""
    champion: str | None
    """The deployed version."""
    champion_model: str | None
    """Digest of the deployed model's bytes."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def warehouse_digests(path: Path) -> dict[str, str]:
    """Return a digest of each warehouse table's rows; empty when the warehouse does not exist."""
    if not path.exists():
        return {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return {name: _digest(repr(con.execute(query).fetchall()).encode()) for name, query in WAREHOUSE_QUERIES.items()}
    finally:
        con.close()


def online_digests(path: Path) -> dict[str, str]:
    """Return a digest of each table of the SQLite online store; empty when it does not exist."""
    if not path.exists():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: _digest(repr(con.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall()).encode()) for table in tables}
    finally:
        con.close()


def file_digests(folder: Path, pattern: str = "*.parquet") -> dict[str, str]:
    """Return a digest of each file under ``folder`` matching ``pattern``, by relative path."""
    if not folder.is_dir():
        return {}
    return {str(path.relative_to(folder)): _digest(path.read_bytes()) for path in sorted(folder.rglob(pattern))}


def champion_version(registry: Path) -> str | None:
    pointer = registry / "champion.json"
    return json.loads(pointer.read_text())["version"] if pointer.exists() else None


def home_state(settings: Settings) -> HomeState:
    """Return the digests of a home's warehouse, online store, Parquet files and models."""
    models = file_digests(settings.registry_dir / "models", "model.ubj")
    champion = champion_version(settings.registry_dir)
    return HomeState(
        warehouse=warehouse_digests(settings.warehouse_path),
        online=online_digests(settings.feast_dir / "online.db"),
        offline=file_digests(settings.offline_dir),
        training_rows=file_digests(settings.home / "training_rows"),
        models={Path(name).parent.name: digest for name, digest in models.items()},
        champion=champion,
        champion_model=models.get(f"{champion}/model.ubj") if champion else None,
    )
