"""Ingest, validation, features and materialization of one day, in rows per second per stage.

Runs on one day of UCI Online Retail (after a few days of history) and on one day of the
synthetic shop at a chosen volume (1M events by default).

    python bench/bench_ingest_features.py [--events 1000000] [--history-days 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, print_table, timed, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.feature_store import materialize_day, open_store, probe_online  # noqa: E402
from freshrank.features import FEATURE_VIEWS, write_feature_partition  # noqa: E402
from freshrank.importers import import_dataset  # noqa: E402
from freshrank.increments import landed_days  # noqa: E402
from freshrank.quality import validate_staged  # noqa: E402
from freshrank.staging import load_staged, stage_increment  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_shop  # noqa: E402
from freshrank.warehouse import publish_increment  # noqa: E402


def run_day(settings, day: date, timings: dict | None) -> dict:
    """Run ingest, validation, features and materialization for one day; time them when asked."""
    timings = timings if timings is not None else {}
    counts = {}
    with timed(timings, "stage"):
        staged = stage_increment(settings, day)
    with timed(timings, "validate"):
        outcome = validate_staged(settings, day)
    if not outcome.result.success:
        raise SystemExit(f"{day} failed validation: {[o.expectation for o in outcome.result.failed()]}")
    with timed(timings, "publish"):
        report = publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
    feature_rows = 0
    with timed(timings, "features"):
        for view in FEATURE_VIEWS:
            written = write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone)
            counts[view] = written.rows
            feature_rows += written.rows
    store = open_store(settings)
    with timed(timings, "materialize"), contextlib.redirect_stdout(io.StringIO()):
        materialize_day(settings, day, store)
    with timed(timings, "probe"):
        probe = probe_online(settings, day, store)
    counts.update(events=staged.rows, published=report.rows_published, feature_rows=feature_rows, probe_mismatches=len(probe.mismatches))
    return counts


def bench_dataset(name: str, settings, history_days: int) -> dict:
    days = landed_days(settings.landing_dir)
    for day in days[:history_days]:
        run_day(settings, day, None)
    timings: dict = {}
    counts = run_day(settings, days[history_days], timings)
    return {"dataset": name, "day": days[history_days].isoformat(), "timings_s": timings, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="Synthetic events per weekday.")
    parser.add_argument("--history-days", type=int, default=3, help="Days loaded before the measured day.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        uci = load_settings(Path(tmp) / "uci")
        import_dataset("online-retail", SHARED_DATA / "uci-online-retail/derived/online_retail.parquet", uci.landing_dir, max_days=args.history_days + 1)
        results.append(bench_dataset("UCI Online Retail", uci, args.history_days))
        shop = load_settings(Path(tmp) / "shop")
        users = max(1000, args.events // 2)
        generate_shop(shop.landing_dir, ShopSpec(days=args.history_days + 1, users=users, items=max(500, users // 20), seed=11, events_per_day=args.events))
        results.append(bench_dataset(f"synthetic shop, {args.events:,} events/day", shop, args.history_days))
    rows = []
    for result in results:
        t, c = result["timings_s"], result["counts"]
        rows.append([result["dataset"], "stage (read, type)", c["events"], t["stage"], c["events"] / t["stage"]])
        rows.append([result["dataset"], "validate (GE suite)", c["events"], t["validate"], c["events"] / t["validate"]])
        rows.append([result["dataset"], "publish (clean, replace partition)", c["events"], t["publish"], c["events"] / t["publish"]])
        rows.append([result["dataset"], "features (3 views)", c["feature_rows"], t["features"], c["feature_rows"] / t["features"]])
        rows.append([result["dataset"], "materialize (Feast, SQLite)", c["feature_rows"], t["materialize"], c["feature_rows"] / t["materialize"]])
        rows.append([result["dataset"], "read-back probe", c["probe_mismatches"], t["probe"], "-"])
    print_table("One day: ingest, features, materialization", ["dataset", "stage", "rows", "seconds", "rows/s"], rows)
    print(f"\nJSON: {write_json('ingest_features', {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
