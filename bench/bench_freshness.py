"""Freshness: from a day landing in the landing folder to the new features and model being served.

Builds a home with a few days of the synthetic shop (``--events`` per day), starts
`freshrank serve` and `freshrank watch` as separate processes on 127.0.0.1, then moves a
new day's file into the landing folder and polls the service's /healthz until it serves
a new model version and item features whose newest event timestamp belongs to the new
day. Reports the total and the per-step split of the watcher's run.

    python bench/bench_freshness.py [--events 100000] [--history-days 3] [--repeats 2]

With ``--home`` the history is the home's landed days instead (for example a home that
``bench_scale.py --home`` built, with the same ``--events --users --items --seed``), so
freshness is measured on a long history without replaying it again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.features import feature_timestamp  # noqa: E402
from freshrank.records import read_record  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_day  # noqa: E402
from orchestration.replay import BRANCH_TAG, dagster_instance, run_changes  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def land(settings, spec: ShopSpec, index: int) -> None:
    """Write the day to a hidden file, then rename it into place, as a delivery tool would."""
    day = spec.start + timedelta(days=index)
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / ".events.parquet.part"
    generate_day(spec, index).to_parquet(temporary, index=False)
    os.replace(temporary, folder / "events.parquet")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def deploy_run_finished(instance, day) -> bool:
    """Return whether the day's deploy run (shadow, drift, report after the deployment) has finished."""
    from dagster import DagsterRunStatus, RunsFilter

    done = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
    records = instance.get_run_records(RunsFilter(tags={"dagster/partition": day.isoformat(), BRANCH_TAG: "deploy"}, statuses=done))
    return bool(records)


def day_timeline(instance, day, landed_epoch: float) -> dict[str, tuple[float, float, str]]:
    """Return, per finished step of the day's runs, its start after landing, its seconds and its run's branch."""
    from dagster import RunsFilter

    timeline = {}
    for record in instance.get_run_records(RunsFilter(tags={"dagster/partition": day.isoformat()})):
        branch = record.dagster_run.tags.get(BRANCH_TAG, "")
        for stats in instance.get_run_step_stats(record.dagster_run.run_id):
            if stats.end_time is None or stats.start_time is None or stats.start_time < landed_epoch:
                continue
            timeline[stats.step_key] = (stats.start_time - landed_epoch, stats.end_time - stats.start_time, branch)
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="Events per synthetic day.")
    parser.add_argument("--history-days", type=int, default=3, help="Days computed before the measured ones.")
    parser.add_argument("--repeats", type=int, default=2, help="New days landed and measured one after another.")
    parser.add_argument("--home", type=Path, default=None, help="Continue this home: its landed days are the history.")
    parser.add_argument("--users", type=int, default=None, help="Users of the shop (default: events / 10, at least 2,000).")
    parser.add_argument("--items", type=int, default=None, help="Items of the shop (default: users / 10, at least 500).")
    parser.add_argument("--seed", type=int, default=13, help="Seed of the synthetic shop (bench_scale.py uses 21).")
    args = parser.parse_args()
    users = args.users or max(2000, args.events // 10)
    items = args.items or max(500, users // 10)
    measurements = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(args.home or Path(tmp) / "home")
        if args.home is not None:
            args.history_days = len([path for path in settings.landing_dir.iterdir() if path.is_dir()])
        spec = ShopSpec(days=args.history_days + args.repeats, users=users, items=items, seed=args.seed, events_per_day=args.events)
        if args.home is None:
            for index in range(args.history_days):
                land(settings, spec, index)
        run_changes(settings)
        env = {**os.environ, "FRESHRANK_HOME": str(settings.home)}
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "freshrank", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watcher = subprocess.Popen([sys.executable, "-m", "freshrank", "watch", "--interval", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            wait_for(lambda: health(port), 120, "the service")
            wait_for(lambda: "watching" in (watcher.stdout.readline() or ""), 120, "the watcher")
            for repeat in range(args.repeats):
                index = args.history_days + repeat
                day = spec.start + timedelta(days=index)
                newest_ts = feature_timestamp(day, settings.zone).timestamp()
                before = health(port)["model_version"]
                landed_at, landed_epoch = time.perf_counter(), time.time()
                land(settings, spec, index)

                def served():
                    state = health(port) or {}
                    snapshot = state.get("item_snapshot") or {}
                    fresh = (snapshot.get("newest_feature_ts") or 0) >= newest_ts - 1
                    return state if fresh and state.get("model_version") != before else None

                state = wait_for(served, 300, f"day {day} to be served")
                elapsed = time.perf_counter() - landed_at
                # Days land a day apart in production: let the watcher finish the steps after
                # the deployment before the next day lands, so they do not delay its start.
                wait_for(lambda: deploy_run_finished(dagster_instance(settings), day), 300, f"the runs of {day} to finish")
                steps = day_timeline(dagster_instance(settings), day, landed_epoch)
                events = (read_record(settings, "events", day) or {}).get("rows_published")
                measurements.append({"day": day.isoformat(), "events": events, "seconds": elapsed, "model_version": state["model_version"], "steps": steps})
                print(f"{day}: served after {elapsed:.1f} s (model {state['model_version']})", flush=True)
        finally:
            for process in (watcher, server):
                process.send_signal(signal.SIGINT)
            for process in (watcher, server):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
    rows = [[m["day"], m["events"], m["seconds"], m["model_version"]] for m in measurements]
    print_table(f"Freshness: landing to served ({args.events:,} events a day)", ["day", "events", "seconds", "served model"], rows)
    last = measurements[-1]
    timeline = [(start, name, seconds, branch) for name, (start, seconds, branch) in last["steps"].items()]
    timeline.append((last["seconds"], "served", None, None))
    step_rows = [[name, start, seconds, branch] for start, name, seconds, branch in sorted(timeline, key=lambda row: row[0])]
    print_table("Timeline of the last measured day (seconds after landing)", ["step", "starts at", "seconds", "run"], step_rows)
    print(f"\nJSON: {write_json('freshness', {'args': {k: str(v) for k, v in vars(args).items()}, 'measurements': measurements})}")


if __name__ == "__main__":
    main()
