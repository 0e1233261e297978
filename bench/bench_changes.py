"""Cost of keeping partitions up to date: re-delivery, a corrected day, a new day, against a full recompute.

Builds a home of N synthetic days (90 by default) through the daily loop, then measures:

* (a) an identical re-delivery of every file: planning time and partitions recomputed;
* (b) one corrected day in the middle: time and partitions recomputed;
* (c) one new day at the end;
* a full recompute: the sum of the runs that built the N days from nothing.

    python bench/bench_changes.py [--days 90] [--users 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from common import print_table, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_day, generate_shop  # noqa: E402
from orchestration.changes import plan_runs  # noqa: E402
from orchestration.replay import dagster_instance, run_changes  # noqa: E402


def timed_changes(settings) -> tuple[float, list]:
    start = time.perf_counter()
    runs = run_changes(settings)
    return time.perf_counter() - start, runs


def partitions(runs) -> int:
    return sum(len(run.materialized) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90, help="Synthetic days in the home.")
    parser.add_argument("--users", type=int, default=300, help="Users of the synthetic shop.")
    args = parser.parse_args()
    spec = ShopSpec(days=args.days + 1, users=args.users, items=max(60, args.users // 3), seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(Path(tmp) / "home")
        generate_shop(settings.landing_dir, ShopSpec(**{**spec.__dict__, "days": args.days}))
        full_s, full_runs = timed_changes(settings)
        print(f"built {args.days} days in {full_s:.0f} s", flush=True)
        landing = sorted(p for p in settings.landing_dir.iterdir() if p.is_dir())
        for folder in landing:
            for path in folder.glob("*.parquet"):
                path.write_bytes(path.read_bytes())
        plan_start = time.perf_counter()
        planned = plan_runs(settings, dagster_instance(settings))
        plan_s = time.perf_counter() - plan_start
        redeliver_s, redeliver_runs = timed_changes(settings)
        middle = landing[len(landing) // 2] / "events.parquet"
        frame = pd.read_parquet(middle)
        frame.loc[frame.index[:50], "user_id"] = frame["user_id"].dropna().iloc[0]
        frame.to_parquet(middle, index=False)
        corrected_s, corrected_runs = timed_changes(settings)
        new_day = spec.start + timedelta(days=args.days)
        folder = settings.landing_dir / new_day.isoformat()
        folder.mkdir()
        generate_day(spec, args.days).to_parquet(folder / "events.parquet", index=False)
        new_s, new_runs = timed_changes(settings)
    assets = Counter(name for run in corrected_runs for name in run.materialized)
    rows = [
        ["(a) identical re-delivery of all files", redeliver_s, len(redeliver_runs), partitions(redeliver_runs)],
        [f"(b) corrected day {middle.parent.name}", corrected_s, len(corrected_runs), partitions(corrected_runs)],
        [f"(c) new day {new_day}", new_s, len(new_runs), partitions(new_runs)],
        [f"full recompute of {args.days} days", full_s, len(full_runs), partitions(full_runs)],
    ]
    print_table(f"Recomputation on {args.days} synthetic days", ["change", "seconds", "runs", "asset partitions"], rows)
    print(f"\nplanning the re-delivery (hash check of {len(landing)} days): {plan_s:.2f} s, {len(planned)} runs planned")
    print(f"corrected day, partitions per asset: {dict(assets)}")
    path = write_json(
        "changes",
        {
            "days": args.days,
            "users": args.users,
            "redelivery": {"seconds": redeliver_s, "runs": len(redeliver_runs), "plan_seconds": plan_s},
            "corrected": {"seconds": corrected_s, "runs": len(corrected_runs), "partitions": partitions(corrected_runs), "per_asset": dict(assets)},
            "new_day": {"seconds": new_s, "runs": len(new_runs), "partitions": partitions(new_runs)},
            "full_recompute": {"seconds": full_s, "runs": len(full_runs), "partitions": partitions(full_runs)},
        },
    )
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
