"""Latency and throughput of the ranking service under concurrent clients, next to `feast serve`.

Builds a home from the synthetic shop (or uses ``--home``), then for the SQLite online store
and, when ``redis-server`` is on PATH, for Redis:

- starts `freshrank serve` in its own process and drives ``POST /rank`` with 100 candidates
  per request from keep-alive HTTP/1.1 connections for a fixed duration;
- starts Feast's own feature server (`feast serve`, with worker recycling turned off by
  ``--max-requests 0``) and sends it, over HTTP, the feature lookups of the same requests.
  These cover all three views for the user and its candidates, because Feast has no item
  snapshot;
- measures in-process (no HTTP): freshrank's ranking path, and Feast's SDK path
  (``get_online_features`` for the user, then for the candidates' item and user x item
  features, then XGBoost scoring).

The load generator is an asyncio client in this process, so it shares the machine's cores
with the server. Latency is from writing a request to reading its whole response.

    python bench/bench_serving.py [--users 20000] [--items 5000] [--days 3] [--duration 12]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

from freshrank.config import Settings, load_settings, save_settings  # noqa: E402
from freshrank.feature_store import feature_refs, materialize_day, model_feature_names, open_store  # noqa: E402
from freshrank.increments import landed_days  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_shop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = 100
DISTINCT_REQUESTS = 2000
"""Request bodies prepared before a run; clients cycle through them."""
STARTUP_TIMEOUT_S = 180


# Homes and servers


def build_home(home: Path, users: int, items: int, days: int) -> Settings:
    """Replay ``days`` days of a synthetic shop into a new home."""
    from orchestration.replay import replay

    settings = load_settings(home)
    generate_shop(settings.landing_dir, ShopSpec(days=days, users=users, items=items, seed=11))
    runs = replay(settings, landed_days(settings.landing_dir))
    failed = [run.day for run in runs if not run.success]
    if failed:
        raise SystemExit(f"the daily loop failed on {failed}; see the Dagster logs under {settings.dagster_home}")
    return settings


def redis_home(base: Settings, target: Path, connection: str) -> Settings:
    """Copy a home, switch it to Redis and materialize its days there."""
    shutil.copytree(base.home, target, ignore=shutil.ignore_patterns("dagster", "landing", "staging", "online.db"))
    online = base.online_store.model_copy(update={"type": "redis", "connection_string": connection})
    save_settings(load_settings(target).model_copy(update={"online_store": online}))
    settings = load_settings(target)
    store = open_store(settings)
    for day in landed_days(base.landing_dir):
        materialize_day(settings, day, store)
    return settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(port: int, path: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``GET path`` until it returns 200; fail with the server log if the process exits or times out."""
    import http.client

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)  # poll interval while the server starts
    raise SystemExit(f"server on port {port} did not respond to {path} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(command: list[str], port: int, ready_path: str, log: Path):
    """Run a server process until the block ends."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_until_answering(port, ready_path, process, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def redis_server(folder: Path):
    """Run redis-server on a free port without persistence; yield its ``host:port``."""
    import redis

    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server on port {port} did not start")
                time.sleep(0.02)  # poll interval until redis-server replies to PING
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def feast_repo(settings: Settings, folder: Path) -> Path:
    """Write a feature_store.yaml for `feast serve` on the home's registry and online store."""
    folder.mkdir(parents=True, exist_ok=True)
    if settings.online_store.type == "redis":
        online = {"type": "redis", "connection_string": settings.online_store.connection_string}
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    config = {
        "project": "freshrank",
        "provider": "local",
        "registry": str(settings.feast_dir / "registry.db"),
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }
    (folder / "feature_store.yaml").write_text(json.dumps(config))
    return folder


# Requests


def request_population(settings: Settings, seed: int) -> tuple[list[str], list[str]]:
    """Return the users and items of the newest feature partitions."""
    import pandas as pd

    def newest(view: str, column: str) -> list[str]:
        path = max((settings.offline_dir / view).glob("*.parquet"))
        return sorted(pd.read_parquet(path, columns=[column])[column].dropna().astype(str).unique())

    return newest("user_features", "user_id"), newest("item_features", "item_id")


def ranking_requests(users: list[str], items: list[str], seed: int) -> list[tuple[str, list[str]]]:
    """Random (user, 100 distinct candidates) pairs; one user in ten is unknown to the store."""
    generator = random.Random(seed)
    requests = []
    for number in range(DISTINCT_REQUESTS):
        user = f"unknown-{number}" if number % 10 == 0 else generator.choice(users)
        requests.append((user, generator.sample(items, CANDIDATES)))
    return requests


def http_post(path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


def rank_bodies(requests) -> list[bytes]:
    return [http_post("/rank", {"user_id": user, "item_ids": items}) for user, items in requests]


def feast_bodies(settings: Settings, requests) -> list[bytes]:
    refs = feature_refs(settings)
    return [
        http_post("/get-online-features", {"features": refs, "entities": {"user_id": [user] * len(items), "item_id": items}})
        for user, items in requests
    ]


# Load generator


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError(f"response without Content-Length: {lines[:5]}")
    await reader.readexactly(length)
    return status


async def _client(port: int, bodies: list[bytes], offset: int, deadline: float, latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    try:
        while time.perf_counter() < deadline:
            body = bodies[index % len(bodies)]
            index += 1
            start = time.perf_counter()
            writer.write(body)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                failures.append(str(status))
    finally:
        writer.close()


async def _drive(port: int, bodies: list[bytes], concurrency: int, duration: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    failures: list[str] = []
    start = time.perf_counter()
    deadline = start + duration
    offsets = [n * len(bodies) // concurrency for n in range(concurrency)]
    await asyncio.gather(*(_client(port, bodies, offset, deadline, latencies, failures) for offset in offsets))
    return latencies, failures, time.perf_counter() - start


def drive(port: int, bodies: list[bytes], concurrency: int, duration: float, warm_up: float) -> dict:
    """Warm up, then run ``concurrency`` clients for ``duration`` seconds; return latency figures in ms."""
    asyncio.run(_drive(port, bodies, concurrency, warm_up))
    gc.collect()
    gc.freeze()
    latencies, failures, elapsed = asyncio.run(_drive(port, bodies, concurrency, duration))
    gc.unfreeze()
    return summarize(np.array(latencies) * 1000, elapsed, failures)


def summarize(latencies_ms: np.ndarray, elapsed_s: float, failures: list[str]) -> dict:
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {
        "requests": int(len(latencies_ms)),
        "errors": len(failures),
        "throughput_rps": len(latencies_ms) / elapsed_s,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(latencies_ms.max()),
    }


# In-process paths


def in_process(settings: Settings, requests, seconds: float) -> list[dict]:
    """Time freshrank's ranking path and Feast's SDK path in this process, one request at a time."""
    from models.registry import ModelRegistry
    from models.serving import ServingEngine

    engine = ServingEngine(settings)
    engine.start(watch=False)
    state = engine.state
    store = engine.reader.store
    booster = ModelRegistry(settings.registry_dir).load(state.control.version)
    booster.set_param({"nthread": 1})
    columns = model_feature_names(settings)
    user_refs = feature_refs(settings, ("user_features",))
    candidate_refs = feature_refs(settings, ("item_features", "user_item_features"))

    def feast_sdk(user: str, items: list[str]) -> np.ndarray:
        user_values = store.get_online_features(features=user_refs, entity_rows=[{"user_id": user}]).to_dict()
        candidate_values = store.get_online_features(
            features=candidate_refs, entity_rows={"user_id": [user] * len(items), "item_id": items}
        ).to_dict()
        matrix = np.empty((len(items), len(columns)), dtype=np.float32)
        for position, name in enumerate(columns):
            values = [user_values[name][0]] * len(items) if name in user_values else candidate_values[name]
            matrix[:, position] = [np.nan if value is None else value for value in values]
        return booster.inplace_predict(matrix, validate_features=False)

    def freshrank_path(user: str, items: list[str]) -> object:
        return engine.rank(state, user, items)

    rows = []
    for name, call in (("freshrank ranking (snapshot + 2 store calls + XGBoost)", freshrank_path),
                       ("Feast SDK get_online_features + XGBoost", feast_sdk)):
        for user, items in requests[:50]:
            call(user, items)
        gc.collect()
        gc.freeze()
        latencies = []
        start = time.perf_counter()
        index = 0
        while time.perf_counter() - start < seconds:
            user, items = requests[index % len(requests)]
            index += 1
            begin = time.perf_counter()
            call(user, items)
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - start
        gc.unfreeze()
        rows.append({"target": name, **summarize(np.array(latencies) * 1000, elapsed, [])})
    engine.stop()
    return rows


# Runs


def run_store(settings: Settings, label: str, args, scratch: Path, requests) -> list[dict]:
    """Benchmark freshrank and `feast serve` on one online store."""
    results = []
    bodies = rank_bodies(requests)
    for workers in args.workers:
        port = free_port()
        command = [sys.executable, "-m", "freshrank", "serve", "--home", str(settings.home), "--port", str(port), "--workers", str(workers)]
        with server(command, port, "/healthz", scratch / f"freshrank-{label}-{workers}.log"):
            for concurrency in args.concurrency:
                figures = drive(port, bodies, concurrency, args.duration, args.warm_up)
                results.append({"target": "freshrank POST /rank", "store": label, "workers": workers, "concurrency": concurrency, **figures})
                print(f"  freshrank {label} workers={workers} concurrency={concurrency}: {figures}", flush=True)
    if args.skip_feast_serve:
        return results
    repo = feast_repo(settings, scratch / f"feast-repo-{label}")
    feast = shutil.which("feast") or str(Path(sys.executable).with_name("feast"))
    port = free_port()
    command = [feast, "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log", "--max-requests", "0", "-w", "1"]
    with server(command, port, "/health", scratch / f"feast-serve-{label}.log"):
        feast_requests = feast_bodies(settings, requests)
        for concurrency in args.concurrency:
            figures = drive(port, feast_requests, concurrency, args.duration, args.warm_up)
            results.append({"target": "feast serve /get-online-features (all views)", "store": label, "workers": 1, "concurrency": concurrency, **figures})
            print(f"  feast serve {label} concurrency={concurrency}: {figures}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="Use this served home instead of building one (SQLite online store).")
    parser.add_argument("--users", type=int, default=20000, help="Users of the synthetic shop.")
    parser.add_argument("--items", type=int, default=5000, help="Items of the synthetic shop.")
    parser.add_argument("--days", type=int, default=3, help="Days replayed through the daily loop.")
    parser.add_argument("--duration", type=float, default=12.0, help="Measured seconds per configuration.")
    parser.add_argument("--warm-up", type=float, default=2.0, help="Unmeasured seconds before each measurement.")
    parser.add_argument("--concurrency", type=lambda text: [int(v) for v in text.split(",")], default=[1, 4], help="Concurrent clients, comma-separated.")
    parser.add_argument("--workers", type=lambda text: [int(v) for v in text.split(",")], default=[1], help="freshrank worker processes, comma-separated.")
    parser.add_argument("--skip-redis", action="store_true", help="Measure SQLite only.")
    parser.add_argument("--skip-feast-serve", action="store_true", help="Do not start `feast serve`.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as temporary:
        scratch = Path(temporary)
        started = time.perf_counter()
        settings = load_settings(args.home) if args.home else build_home(scratch / "home", args.users, args.items, args.days)
        build_seconds = time.perf_counter() - started
        users, items = request_population(settings, seed=5)
        requests = ranking_requests(users, items, seed=5)
        print(f"home {settings.home}: {len(users)} users, {len(items)} items (built in {build_seconds:.0f} s)", flush=True)

        rows = in_process(settings, requests, args.duration)
        for row in rows:
            row.update(store="sqlite", workers="-", concurrency=1)
        rows += run_store(settings, "sqlite", args, scratch, requests)
        if not args.skip_redis and shutil.which("redis-server"):
            with redis_server(scratch) as connection:
                redis_settings = redis_home(settings, scratch / "home-redis", connection)
                in_redis = in_process(redis_settings, requests, args.duration)
                for row in in_redis:
                    row.update(store="redis", workers="-", concurrency=1)
                rows += in_redis + run_store(redis_settings, "redis", args, scratch, requests)
        elif not args.skip_redis:
            print("redis-server is not on PATH; Redis rows are left out", flush=True)

    header = ["target", "store", "workers", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    table = [
        [row["target"], row["store"], row["workers"], row["concurrency"], row["requests"], row["errors"], row["throughput_rps"],
         row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]]
        for row in rows
    ]
    print_table(f"Ranking {CANDIDATES} candidates per request ({len(users)} users, {len(items)} items)", header, table)
    path = write_json(
        "serving",
        {"candidates": CANDIDATES, "users": len(users), "items": len(items), "duration_s": args.duration, "results": rows},
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
