"""Cost of one day's drift check: the prediction_drift step, and its Evidently part.

Runs the step's work (``orchestration.assets._drift_record``) on a hard-linked copy of
``--home`` (a home of ``bench_scale.py --home``), ``--repeats`` times in one process, so
that imports and the first load of the model are not counted. The alert log is copied,
not linked, because an alert appends to it. ``evidently s`` is the time of
``freshrank.drift.check_drift``: the Evidently report and its HTML file; the rest of the
step reads the compared rows and scores the day's rows with the model.

    python bench/bench_drift.py --home HOME --day 2024-03-30 [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

import freshrank.drift  # noqa: E402
from freshrank.config import load_settings  # noqa: E402
from orchestration.assets import _drift_record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Home with training rows of the day and its reference window.")
    parser.add_argument("--day", type=date.fromisoformat, required=True, help="Day to check, YYYY-MM-DD.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs after one warm-up run.")
    args = parser.parse_args()

    evidently_seconds: list[float] = []
    check_drift = freshrank.drift.check_drift

    def timed_check(*arguments, **keywords):
        start = time.perf_counter()
        try:
            return check_drift(*arguments, **keywords)
        finally:
            evidently_seconds.append(time.perf_counter() - start)

    freshrank.drift.check_drift = timed_check
    step_seconds, record = [], {}
    with tempfile.TemporaryDirectory(dir=args.home.parent) as scratch:
        home = Path(scratch) / "home"
        shutil.copytree(args.home, home, copy_function=os.link)
        alerts = home / "alerts.jsonl"
        if alerts.exists():
            alerts.unlink()
            shutil.copy2(args.home / "alerts.jsonl", alerts)
        settings = load_settings(home)
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            record = _drift_record(settings, args.day)
            step_seconds.append(time.perf_counter() - start)
    if "skipped_reason" in record:
        raise SystemExit(f"the drift check of {args.day} was skipped: {record['skipped_reason']}")

    step, evidently = statistics.median(step_seconds[1:]), statistics.median(evidently_seconds[1:])
    header = ["day", "columns", "step s (median)", "evidently s", "rows and scoring s", "drift share"]
    rows = [[args.day.isoformat(), len(record["columns"]), step, evidently, step - evidently, record["drift_share"]]]
    print_table(f"Drift check of {args.day} ({args.repeats} runs after a warm-up)", header, rows)
    payload = {"day": args.day.isoformat(), "repeats": args.repeats, "header": header, "rows": rows}
    print(f"JSON: {write_json('drift', payload)}")


if __name__ == "__main__":
    main()
