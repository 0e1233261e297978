"""Online-store write throughput: Feast's materialize, freshrank's bulk writer, and a plain bulk insert.

Builds one day of features of the synthetic shop (``--events`` per day), then writes the
same feature rows into SQLite and Redis three ways:

* ``FeatureStore.materialize`` (Feast 0.67);
* freshrank's bulk writer (freshrank/online_writer.py), same storage layout;
* a plain bulk insert of the already serialized rows with the client library
  (sqlite3 ``executemany`` into an empty table of the same schema; a redis-py pipeline of
  HSETs), the physical limit of each store from Python.

    python bench/bench_online_write.py [--events 200000]

With ``--replay-days N`` it instead replays ``N`` days of the shop into the warehouse and
times the write of the newest day twice: the diff write (only rows changed since day
``N - 1``, which the online store holds) and the full write of every row of the day.

    python bench/bench_online_write.py --replay-days 14 --events 100000

Redis runs when ``redis-server`` is on PATH; the script starts it on a free port of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow.parquet as pq  # noqa: E402
from common import print_table, write_json  # noqa: E402

from freshrank.config import OnlineStoreConfig, load_settings, save_settings  # noqa: E402
from freshrank.feature_store import open_store, write_online  # noqa: E402
from freshrank.features import ENTITY_KEYS, FEATURE_VIEWS, feature_columns, partition_path, write_feature_partition  # noqa: E402
from freshrank.increments import landed_days, read_increment  # noqa: E402
from freshrank.online_watermark import clear_watermark  # noqa: E402
from freshrank.online_writer import _ValueEncoder, changed_rows, write_redis, write_sqlite  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_shop  # noqa: E402
from freshrank.warehouse import publish_increment  # noqa: E402

DAY = date(2024, 1, 1)


def build_home(root: Path, events: int, online: OnlineStoreConfig):
    settings = load_settings(root)
    save_settings(settings.model_copy(update={"online_store": online}))
    settings = load_settings(root)
    users = max(1000, events // 2)
    generate_shop(settings.landing_dir, ShopSpec(days=1, users=users, items=max(500, users // 20), seed=3, events_per_day=events))
    publish_increment(settings.warehouse_path, read_increment(settings.landing_dir, DAY, settings.timezone), settings.timezone)
    for view in FEATURE_VIEWS:
        write_feature_partition(settings.warehouse_path, settings.offline_dir, view, DAY, settings.features, settings.zone)
    return settings


def feature_tables(settings):
    return {view: pq.read_table(partition_path(settings.offline_dir, view, DAY)) for view in FEATURE_VIEWS}


def time_feast(settings, store) -> float:
    from freshrank.increments import day_bounds

    start, end = day_bounds(DAY, settings.zone)
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        store.materialize(start_date=start, end_date=end, feature_views=list(FEATURE_VIEWS))
    return time.perf_counter() - began


def time_bulk(settings, store, tables, writer) -> float:
    began = time.perf_counter()
    for view, table in tables.items():
        writer(store, view, table, feature_columns(view, settings.features))
    return time.perf_counter() - began


def time_plain_sqlite(settings, tables) -> float:
    """Insert pre-serialized rows into empty tables of Feast's schema with executemany."""
    encoder = _ValueEncoder()
    batches = []
    for view, table in tables.items():
        keys = [str(index).encode() for index in range(table.num_rows)]
        stamp = "2024-01-01 23:59:59"
        rows = []
        for feature in feature_columns(view, settings.features):
            for index, value in enumerate(table.column(feature).to_pylist()):
                blob, text = encoder.encode(value)
                rows.append((keys[index], feature, blob, text, stamp, stamp))
        batches.append(rows)
    path = settings.home / "plain.db"
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE plain (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, event_ts timestamp, "
        "created_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
    )
    began = time.perf_counter()
    with connection:
        for rows in batches:
            connection.executemany("INSERT INTO plain VALUES (?, ?, ?, ?, ?, ?)", rows)
    elapsed = time.perf_counter() - began
    connection.close()
    return elapsed


def time_plain_redis(port: int, settings, tables) -> float:
    import redis

    encoder = _ValueEncoder()
    mappings = []
    for view, table in tables.items():
        columns = {feature: table.column(feature).to_pylist() for feature in feature_columns(view, settings.features)}
        for index in range(table.num_rows):
            mappings.append((f"plain:{view}:{index}".encode(), {feature.encode(): encoder.encode(values[index])[0] for feature, values in columns.items()}))
    client = redis.Redis(host="127.0.0.1", port=port)
    began = time.perf_counter()
    for start in range(0, len(mappings), 5000):
        with client.pipeline(transaction=False) as pipe:
            for key, mapping in mappings[start:start + 5000]:
                pipe.hset(key, mapping=mapping)
            pipe.execute()
    return time.perf_counter() - began


@contextlib.contextmanager
def redis_server(folder: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def build_replay_home(root: Path, days: int, events: int, online: OnlineStoreConfig):
    """Publish ``days`` days of the shop and compute the features of the day before the newest."""
    settings = load_settings(root)
    save_settings(settings.model_copy(update={"online_store": online}))
    settings = load_settings(root)
    users = max(1000, events // 2)
    spec = ShopSpec(days=days, users=users, items=max(500, users // 20), seed=3, start=DAY, events_per_day=events)
    generate_shop(settings.landing_dir, spec)
    for day in landed_days(settings.landing_dir):
        publish_increment(settings.warehouse_path, read_increment(settings.landing_dir, day, settings.timezone), settings.timezone)
    newest = DAY + timedelta(days=days - 1)
    write_features(settings, newest - timedelta(days=1))
    return settings, newest


def write_features(settings, day: date) -> None:
    for view in FEATURE_VIEWS:
        write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone)


def time_diff_and_full(settings, newest: date, views: list[list]) -> list[list]:
    """Write day ``newest - 1`` in full, compute ``newest``'s features, then time its diff write and its full write.

    Appends to ``views`` one row per feature view: partition rows, rows the diff wrote, and
    the seconds ``changed_rows`` takes to find them (timed again on its own, after the writes).
    """
    store = open_store(settings)
    name = "Redis" if settings.online_store.type == "redis" else "SQLite"
    write_online(settings, newest - timedelta(days=1), store)
    write_features(settings, newest)
    diff = write_online(settings, newest, store)
    if diff.mode != "diff":
        raise SystemExit(f"expected a diff write of {newest}, got a {diff.mode} write: {diff.reason}")
    clear_watermark(store.config)
    full = write_online(settings, newest, store)
    partition_rows = 0
    for view in FEATURE_VIEWS:
        current = partition_path(settings.offline_dir, view, newest)
        rows = pq.ParquetFile(current).metadata.num_rows
        partition_rows += rows
        began = time.perf_counter()
        changed_rows(current, partition_path(settings.offline_dir, view, newest - timedelta(days=1)), list(ENTITY_KEYS[view]), feature_columns(view, settings.features))
        views.append([name, view, rows, diff.rows[view], time.perf_counter() - began])
    return [
        [name, write.mode, partition_rows, write.total_rows, write.seconds, write.total_rows / write.seconds]
        for write in (diff, full)
    ]


def copy_to_redis(settings, target: Path, port: int):
    """Copy a built home without its SQLite online store and switch it to the Redis store on ``port``."""
    shutil.copytree(settings.home, target, ignore=shutil.ignore_patterns("online.db*", "landing", "staging"))
    online = OnlineStoreConfig(type="redis", connection_string=f"127.0.0.1:{port}")
    save_settings(load_settings(target).model_copy(update={"online_store": online}))
    return load_settings(target)


def replay_main(args) -> None:
    rows: list[list] = []
    views: list[list] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings, newest = build_replay_home(Path(tmp) / "sqlite", args.replay_days, args.events, OnlineStoreConfig())
        # The Redis home starts from a copy taken before the newest day's features exist.
        with redis_server(Path(tmp)) as port:
            redis_settings = None if port is None else copy_to_redis(settings, Path(tmp) / "redis", port)
            rows += time_diff_and_full(settings, newest, views)
            if redis_settings is not None:
                rows += time_diff_and_full(redis_settings, newest, views)
    print_table(
        f"Online write of day {args.replay_days} of a replay ({args.events:,} events per day)",
        ["store", "write", "partition rows", "rows written", "seconds", "rows written/s"],
        rows,
    )
    print_table(
        "Diff write per feature view",
        ["store", "view", "partition rows", "rows written", "seconds to find them"],
        views,
    )
    header = ["store", "mode", "partition_rows", "rows_written", "seconds"]
    path = write_json(
        "online_write_diff",
        {
            "events_per_day": args.events,
            "days": args.replay_days,
            "results": [dict(zip(header, row)) for row in rows],
            "views": [dict(zip(["store", "view", "partition_rows", "rows_written", "seconds_to_find"], row)) for row in views],
        },
    )
    print(f"\nJSON: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="Synthetic events per day.")
    parser.add_argument(
        "--replay-days", type=int, default=0,
        help="Replay this many days and compare the diff and full writes of the newest day (0: one-day write throughput).",
    )
    args = parser.parse_args()
    if args.replay_days:
        if args.replay_days < 2:
            raise SystemExit("--replay-days must be at least 2: the diff write compares the newest day with the day before")
        replay_main(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = build_home(Path(tmp) / "sqlite", args.events, OnlineStoreConfig())
        tables = feature_tables(settings)
        entities = sum(table.num_rows for table in tables.values())
        values = sum(table.num_rows * len(feature_columns(view, settings.features)) for view, table in tables.items())
        store = open_store(settings)
        results.append(["SQLite", "Feast materialize", time_feast(settings, store)])
        results.append(["SQLite", "freshrank bulk writer", time_bulk(settings, store, tables, write_sqlite)])
        results.append(["SQLite", "plain executemany insert", time_plain_sqlite(settings, tables)])
        with redis_server(Path(tmp)) as port:
            if port is not None:
                redis_settings = build_home(Path(tmp) / "redis", args.events, OnlineStoreConfig(type="redis", connection_string=f"127.0.0.1:{port}"))
                redis_store = open_store(redis_settings)
                results.append(["Redis", "Feast materialize", time_feast(redis_settings, redis_store)])
                results.append(["Redis", "freshrank bulk writer", time_bulk(redis_settings, redis_store, tables, write_redis)])
                results.append(["Redis", "plain pipelined HSET", time_plain_redis(port, redis_settings, tables)])
    rows = [[store_name, method, entities, seconds, entities / seconds, values / seconds] for store_name, method, seconds in results]
    print_table(
        f"Online write of one day ({args.events:,} events; {entities:,} entity rows, {values:,} values)",
        ["store", "method", "entity rows", "seconds", "entity rows/s", "values/s"],
        rows,
    )
    path = write_json("online_write", {"events": args.events, "entity_rows": entities, "values": values, "results": [dict(zip(["store", "method", "seconds"], r)) for r in results]})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
