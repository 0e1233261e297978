"""90-day features of one day: the full aggregation over the window against the update from the day before.

Runs both queries of ``--day`` for ``--view`` (user x item or user x category) on a home
that has the day's events and the partition of the day before, for example a home of
``bench_scale.py --home``. Each result is written to a temporary Parquet file as the
feature asset does, and the two must be equal.

    python bench/bench_window_update.py --home HOME --day 2024-01-30 [--view user_category_features] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from common import print_table, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.features import (  # noqa: E402
    feature_timestamp,
    partition_path,
    user_category_features_sql,
    user_item_features_sql,
)
from freshrank.warehouse import connect  # noqa: E402
from freshrank.window_update import CATEGORY_VIEW, VIEW, update_sql  # noqa: E402


def timed_copy(settings, sql: str, day: date, target: Path) -> float:
    with connect(settings.warehouse_path, read_only=True) as con:
        started = time.perf_counter()
        con.execute(
            f"COPY (SELECT * FROM ({sql}) ORDER BY ALL) TO '{target}' (FORMAT parquet, COMPRESSION zstd)",
            {"as_of": feature_timestamp(day, settings.zone)},
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Home with the day's events and the partition of the day before.")
    parser.add_argument("--day", type=date.fromisoformat, required=True, help="Partition day, YYYY-MM-DD.")
    parser.add_argument("--view", choices=[VIEW, CATEGORY_VIEW], default=VIEW, help="Feature view.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each query.")
    args = parser.parse_args()

    settings = load_settings(args.home)
    previous = partition_path(settings.offline_dir, args.view, args.day - timedelta(days=1))
    if not previous.exists():
        raise SystemExit(f"{previous} not found: compute the features of the day before first")
    queries = {
        "full aggregation over the window": (
            user_item_features_sql if args.view == VIEW else user_category_features_sql
        )(args.day, settings.features),
        "previous partition + day - day that left": update_sql(args.view, args.day, settings.features, previous, settings.zone),
    }
    seconds: dict[str, list[float]] = {name: [] for name in queries}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {name: Path(tmp) / f"{index}.parquet" for index, name in enumerate(queries)}
        for _ in range(args.repeats):
            for name, sql in queries.items():
                seconds[name].append(timed_copy(settings, sql, args.day, outputs[name]))
        frames = [pd.read_parquet(path) for path in outputs.values()]
        equal = frames[0].equals(frames[1])
    rows = [[name, ", ".join(f"{value:.2f}" for value in values), len(frames[0])] for name, values in seconds.items()]
    print_table(f"{args.view} of {args.day} (equal: {equal})", ["query", "seconds", "rows"], rows)
    payload = {"view": args.view, "day": args.day.isoformat(), "home": str(args.home), "seconds": seconds, "rows": len(frames[0]), "equal": equal}
    print(f"\nJSON: {write_json('window_update', payload)}")
    if not equal:
        raise SystemExit("the two queries returned different rows")


if __name__ == "__main__":
    main()
