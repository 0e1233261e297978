"""Wall time of one new day through the whole Dagster daily loop against a full recompute.

Replays the first N days of UCI Online Retail (60 by default) through the `daily_loop`
job in a fresh home, one run per day, and reports:

* the wall time of the last day's run: the cost of one new day when the history is in place;
* the sum of all runs: the cost of recomputing every day so far from nothing, which is
  what a pipeline without partitions would pay for the same new day;
* the per-stage split of the last day, from Dagster's step durations.

    python bench/bench_daily_loop.py [--days 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, print_table, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.importers import import_dataset  # noqa: E402
from freshrank.increments import landed_days  # noqa: E402
from orchestration.build import build_definitions  # noqa: E402
from orchestration.replay import dagster_instance, run_day  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60, help="Days of UCI Online Retail to replay.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(Path(tmp) / "home")
        import_dataset("online-retail", SHARED_DATA / "uci-online-retail/derived/online_retail.parquet", settings.landing_dir, max_days=args.days)
        days = landed_days(settings.landing_dir)
        instance = dagster_instance(settings)
        defs = build_definitions(settings)
        per_day = []
        for day in days:
            start = time.perf_counter()
            outcome = run_day(settings, day, instance, defs)
            seconds = time.perf_counter() - start
            blocked = outcome.check_passed is False
            if not outcome.success and not blocked:
                raise SystemExit(f"the run of {day} failed; see {settings.dagster_home}")
            per_day.append({"day": day.isoformat(), "seconds": seconds, "steps": outcome.step_seconds, "blocked": blocked})
            print(f"{day} {seconds:6.2f} s{'  blocked by validation' if blocked else ''}", flush=True)
    last = [entry for entry in per_day if not entry["blocked"]][-1]
    total = sum(entry["seconds"] for entry in per_day)
    rows = [
        [f"one new day ({last['day']})", last["seconds"]],
        ["days blocked by validation", sum(entry["blocked"] for entry in per_day)],
        ["full recompute of %d days" % len(per_day), total],
        ["ratio full / new day", total / last["seconds"]],
    ]
    print_table(f"Daily loop on {len(per_day)} days of UCI Online Retail", ["measure", "seconds"], rows)
    steps = sorted(last["steps"].items(), key=lambda item: -item[1])
    print_table("Steps of the last day", ["step", "seconds"], [[name, value] for name, value in steps])
    path = write_json("daily_loop", {"days": len(per_day), "new_day_s": last["seconds"], "full_recompute_s": total, "ratio": total / last["seconds"], "per_day": per_day})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
