"""Shared fixtures of the test suite."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from freshrank.config import Settings, load_settings
from freshrank.features import FEATURE_VIEWS, write_feature_partition
from freshrank.increments import read_increment
from freshrank.warehouse import PublishReport, publish_increment

# Items of the tiny shop: category and unit price.
CORE_ITEMS: dict[str, tuple[str, float]] = {"i1": ("A", 10.0), "i2": ("B", 5.0), "i3": ("A", 20.0), "i4": ("C", 7.0)}
CORE_FEATURE_DAYS: tuple[date, ...] = tuple(date.fromisoformat(day) for day in ("2024-02-10", "2024-03-01", "2024-03-05", "2024-03-09", "2024-03-10"))
"""Days whose features the tiny home contains: the four event days, and 9 March, when u3 and i4 expire."""


def core_event(when: str, user: str | None, item: str, event_type: str, quantity: float = 1.0) -> dict:
    """Return one canonical event of the tiny shop, at ``when`` UTC."""
    category, price = CORE_ITEMS[item]
    return {
        "event_time": pd.Timestamp(when, tz="UTC"),
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "quantity": quantity,
        "price": price,
        "category": category,
        "session_id": None,
    }


def core_tiny_shop() -> dict[date, pd.DataFrame]:
    """Return the events of the tiny shop per day (UTC days): 3 users, 4 items, 4 days.

    u3 views i4 once on 10 February and never again, so both leave every 28-day window on
    9 March. On 5 March one view of i2 has no user.
    """
    days = {
        date(2024, 2, 10): [core_event("2024-02-10 09:00", "u3", "i4", "view")],
        date(2024, 3, 1): [
            core_event("2024-03-01 10:00", "u1", "i1", "view"),
            core_event("2024-03-01 10:30", "u1", "i1", "purchase", 2.0),
            core_event("2024-03-01 12:00", "u2", "i2", "view"),
        ],
        date(2024, 3, 5): [
            core_event("2024-03-05 08:00", "u2", "i1", "view"),
            core_event("2024-03-05 08:10", "u2", "i1", "add_to_cart"),
            core_event("2024-03-05 08:20", "u2", "i1", "purchase"),
            core_event("2024-03-05 09:00", "u1", "i2", "view"),
            core_event("2024-03-05 13:00", None, "i2", "view"),
        ],
        date(2024, 3, 10): [
            core_event("2024-03-10 06:00", "u1", "i1", "view"),
            core_event("2024-03-10 07:00", "u1", "i3", "view"),
            core_event("2024-03-10 18:00", "u1", "i3", "purchase"),
            core_event("2024-03-10 20:00", "u2", "i2", "view"),
        ],
    }
    return {day: pd.DataFrame(rows) for day, rows in days.items()}


def core_write_landing(settings: Settings, day: date, frame: pd.DataFrame, name: str = "events.parquet") -> Path:
    """Write ``frame`` as ``<landing>/<day>/<name>`` in the format its suffix names."""
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")
    return path


def core_land_and_publish(settings: Settings, day: date, frame: pd.DataFrame, name: str = "events.parquet") -> PublishReport:
    """Deliver ``frame`` as the day's only landing file, read it and publish it to the warehouse."""
    folder = settings.landing_dir / day.isoformat()
    if folder.is_dir():
        for old in folder.iterdir():
            old.unlink()
    core_write_landing(settings, day, frame, name)
    increment = read_increment(settings.landing_dir, day, settings.timezone)
    return publish_increment(settings.warehouse_path, increment, settings.timezone)


def core_build_home(home: Path, shop: dict[date, pd.DataFrame], feature_days: tuple[date, ...]) -> Settings:
    """Publish ``shop`` into a new home and write every feature view for ``feature_days``, oldest first."""
    settings = load_settings(home)
    for day, frame in shop.items():
        core_land_and_publish(settings, day, frame)
    for day in sorted(feature_days):
        for view in FEATURE_VIEWS:
            write_feature_partition(
                settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone
            )
    return settings


@pytest.fixture
def core_settings(tmp_path: Path) -> Settings:
    """Settings of an empty home under the test's tmp_path (UTC days, default windows)."""
    return load_settings(tmp_path / "home")


@pytest.fixture
def core_tiny_home(tmp_path: Path) -> Settings:
    """A home with the tiny shop published and its features written for ``CORE_FEATURE_DAYS``."""
    return core_build_home(tmp_path / "home", core_tiny_shop(), CORE_FEATURE_DAYS)


@pytest.fixture(scope="session")
def core_home_builder() -> Callable[[Path, dict[date, pd.DataFrame], tuple[date, ...]], Settings]:
    """``core_build_home``, for module-scoped fixtures that cannot import from conftest."""
    return core_build_home


@pytest.fixture(scope="session")
def core_shop() -> Callable[[], dict[date, pd.DataFrame]]:
    """``core_tiny_shop``: a function returning fresh frames of the tiny shop per day."""
    return core_tiny_shop


@pytest.fixture(scope="session")
def core_event_row() -> Callable[..., dict]:
    """``core_event``: a function returning one canonical event row of the tiny shop."""
    return core_event


@pytest.fixture(scope="session")
def core_publish() -> Callable[..., PublishReport]:
    """``core_land_and_publish``: deliver a frame as the day's only landing file and publish it."""
    return core_land_and_publish


@pytest.fixture(scope="session")
def core_land() -> Callable[..., Path]:
    """``core_write_landing``: write a frame into a day's landing folder."""
    return core_write_landing


@pytest.fixture(scope="session")
def core_feature_days() -> tuple[date, ...]:
    """``CORE_FEATURE_DAYS``: the days whose features ``core_tiny_home`` contains."""
    return CORE_FEATURE_DAYS


def _start_redis(executable: str, folder: Path):
    """Start redis-server on a free 127.0.0.1 port and poll PING until it answers; return (process, port)."""
    import socket
    import subprocess
    import time

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with open(folder / f"redis-{port}.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if client.ping():
                return process, port
        except redis.ConnectionError:
            time.sleep(0.02)  # poll interval until the server accepts connections
    process.kill()
    process.wait()
    output = (folder / f"redis-{port}.log").read_text(errors="replace")
    raise RuntimeError(f"redis-server on port {port} did not answer PING (exit code {process.returncode}): {output[-2000:]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A redis-server on 127.0.0.1 at a free port, without persistence; yields ``"127.0.0.1:<port>"``."""
    import shutil

    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH; install it (apt-get install redis-server) to run the Redis online store tests")
    pytest.importorskip("redis", reason="the redis client is needed to talk to redis-server (pip install freshrank[redis])")
    folder = tmp_path_factory.mktemp("redis")
    attempts = 3
    for attempt in range(attempts):
        try:
            process, port = _start_redis(executable, folder)
            break
        except RuntimeError:
            # Another process may have taken the probed port before redis-server bound it.
            if attempt == attempts - 1:
                raise
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
