"""Cost of one new day as history grows: wall time per stage and peak memory, day by day.

Lands the synthetic shop one day at a time, with ``--events`` events per weekday. Each day
is generated on its own, so no more than one day is ever in memory. Each day's daily loop
runs in its own process, as the landing sensor's run would. Each day reports its wall time, the split
over the pipeline's stages, and the peak resident memory of the run's process. The
flatness figure is the mean wall time of the last three measured days over that of
days 8 to 10 (day 10 and its two neighbours, which smooths the weekday pattern).

    nice python bench/bench_scale.py [--events 2000000] [--days 90] [--users 400000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

STAGES: dict[str, tuple[str, ...]] = {
    "ingest": ("increment", "events"),
    "validate": ("increment_check_increment_valid", "check_increment_valid"),
    "features": ("user_features", "item_features", "user_item_features", "user_category_features"),
    "materialize": ("online_features",),
    "training rows": ("training_rows",),
    "train": ("challenger_model", "shadow_full_retrain"),
    "evaluate": ("prequential_evaluation",),
    "drift": ("prediction_drift",),
    "deploy": ("deployment",),
    "report": ("daily_report",),
}
"""Pipeline stages and the Dagster step keys (asset names) that belong to each."""


def stage_split(step_seconds: dict[str, float]) -> dict[str, float]:
    """Sum step durations per stage; a step of no known stage is reported under its own name."""
    split = {stage: 0.0 for stage in STAGES}
    for step, seconds in step_seconds.items():
        stage = next((name for name, steps in STAGES.items() if any(step.endswith(key) for key in steps)), step)
        split[stage] = split.get(stage, 0.0) + seconds
    return split


class RssSampler:
    """Resident memory of this process every 0.1 s, from /proc, in a background thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.wait(0.1):
            with open("/proc/self/statm") as statm:
                self.samples.append((time.time(), int(statm.read().split()[1]) * page_mib))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> float | None:
        inside = [rss for at, rss in self.samples if start <= at <= end]
        return max(inside) if inside else None


def stage_peaks(step_peaks: dict[str, float | None]) -> dict[str, float]:
    """Return the highest resident memory seen during the steps of each stage, in MiB."""
    peaks: dict[str, float] = {}
    for step, peak in step_peaks.items():
        stage = next((name for name, steps in STAGES.items() if any(step.endswith(key) for key in steps)), step)
        if peak is not None:
            peaks[stage] = max(peaks.get(stage, 0.0), peak)
    return peaks


def run_one_day(home: Path, day: date) -> None:
    """Run one day's daily loop in this process and print its measurements as one JSON line."""
    os.environ["FRESHRANK_HOME"] = str(home)
    from freshrank.config import load_settings
    from orchestration.replay import dagster_instance, run_day

    settings = load_settings(home)
    instance = dagster_instance(settings)
    start = time.perf_counter()
    with RssSampler() as sampler:
        outcome = run_day(settings, day, instance)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Steps of concurrent branches overlap, so a step's peak includes what the other branch held.
    step_peaks = {
        stats.step_key: sampler.peak_between(stats.start_time, stats.end_time)
        for run_id in outcome.run_ids
        for stats in instance.get_run_step_stats(run_id)
        if stats.start_time is not None and stats.end_time is not None
    }
    print(json.dumps({"day": day.isoformat(), "success": outcome.success, "wall_seconds": wall, "peak_rss_mib": peak_kib / 1024, "steps": outcome.step_seconds, "step_peak_mib": step_peaks}))


def land_day(home: Path, spec, index: int) -> int:
    """Generate day ``index`` of the shop into the landing folder; return its event count."""
    from freshrank.synthetic import generate_day

    day = spec.start + timedelta(days=index)
    folder = home / "landing" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    frame = generate_day(spec, index)
    temporary = folder / ".events.parquet.part"
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, folder / "events.parquet")
    return len(frame)


def measure_day(home: Path, day: date) -> dict:
    """Run one day in a child process and return its JSON line."""
    command = [sys.executable, __file__, "--one-day", day.isoformat(), "--home", str(home)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not json.loads(lines[-1])["success"]:
        raise SystemExit(f"the run of {day} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def flatness(days: list[dict]) -> dict:
    """Compare the mean wall time of the last three days with that of days 8 to 10."""
    if len(days) < 13:
        return {}
    early = [entry["wall_seconds"] for entry in days[7:10]]
    late = [entry["wall_seconds"] for entry in days[-3:]]
    ratio = (sum(late) / len(late)) / (sum(early) / len(early))
    return {"early_days": "8-10", "late_days": f"{len(days) - 2}-{len(days)}", "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="Events per synthetic weekday.")
    parser.add_argument("--days", type=int, default=90, help="Days to land and run, one after another.")
    parser.add_argument("--users", type=int, default=400_000, help="Users of the synthetic shop.")
    parser.add_argument("--items", type=int, default=50_000, help="Items of the synthetic shop.")
    parser.add_argument("--home", type=Path, default=None, help="Home to build (default: a temporary folder, removed at the end).")
    parser.add_argument("--from-day", type=int, default=1, help="First day to land and run; the days before it must be in --home.")
    parser.add_argument("--one-day", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_day:
        run_one_day(args.home, date.fromisoformat(args.one_day))
        return

    from freshrank.synthetic import ShopSpec

    spec = ShopSpec(days=args.days, users=args.users, items=args.items, seed=21, events_per_day=args.events)
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        for index in range(args.from_day - 1, args.days):
            events = land_day(home, spec, index)
            entry = measure_day(home, spec.start + timedelta(days=index))
            entry["events"] = events
            entry["stages"] = stage_split(entry.pop("steps"))
            entry["stage_peak_mib"] = stage_peaks(entry.pop("step_peak_mib"))
            measured.append(entry)
            print(f"day {index + 1}: {events:,} events, {entry['wall_seconds']:.1f} s, peak {entry['peak_rss_mib']:,.0f} MiB", flush=True)
            write_json("scale", {"args": {k: str(v) for k, v in vars(args).items()}, "days": measured, "flatness": flatness(measured)})
    header = ["day", "events", "wall s", "peak MiB", *STAGES]
    first = args.from_day
    rows = [[first + index, e["events"], e["wall_seconds"], e["peak_rss_mib"], *[e["stages"].get(stage, 0.0) for stage in STAGES]] for index, e in enumerate(measured)]
    print_table(f"One new day as history grows ({args.events:,} events a weekday)", header, rows)
    rows = [[first + index, *[e["stage_peak_mib"].get(stage) for stage in STAGES]] for index, e in enumerate(measured)]
    print_table("Peak resident MiB during each stage (steps of concurrent branches overlap)", ["day", *STAGES], rows)
    summary = flatness(measured)
    if summary:
        print(f"\nwall time, days {summary['late_days']} over days {summary['early_days']}: {summary['ratio']:.2f}")
    print(f"JSON: {write_json('scale', {'args': {k: str(v) for k, v in vars(args).items()}, 'days': measured, 'flatness': summary})}")


if __name__ == "__main__":
    main()
