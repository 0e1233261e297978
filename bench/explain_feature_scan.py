"""Show that a day's feature query reads only the partitions of its window (DuckDB EXPLAIN ANALYZE).

Loads N synthetic days into a fresh warehouse, then profiles the user-feature query of
the last day (28-day window) and prints the rows the table scan emitted against the
rows in the table.

    python bench/explain_feature_scan.py [--days 90] [--events 50000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
from common import print_table, write_json  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.features import feature_timestamp, user_features_sql  # noqa: E402
from freshrank.increments import read_increment  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_shop  # noqa: E402
from freshrank.warehouse import publish_increment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90, help="Days loaded into the warehouse.")
    parser.add_argument("--events", type=int, default=50_000, help="Events per day.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(Path(tmp) / "home")
        spec = ShopSpec(days=args.days, users=20_000, items=2_000, seed=2, events_per_day=args.events)
        days = generate_shop(settings.landing_dir, spec)
        for name in days:
            publish_increment(settings.warehouse_path, read_increment(settings.landing_dir, name, settings.timezone), settings.timezone)
        last = spec.start + timedelta(days=args.days - 1)
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        total = con.execute("SELECT count(*) FROM events").fetchone()[0]
        window = con.execute(
            "SELECT count(*) FROM events WHERE event_day BETWEEN ? AND ?", [last - timedelta(days=27), last]
        ).fetchone()[0]
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute(f"PRAGMA profiling_output = '{tmp}/profile.json'")
        con.execute(user_features_sql(last, settings.features), {"as_of": feature_timestamp(last, settings.zone)}).fetchall()
        con.close()
        profile = Path(tmp, "profile.json").read_text()
    scans = [node for node in _operators(json.loads(profile)["operator"]) if node.get("type") == "TABLE_SCAN"]
    scan = max(scans, key=lambda node: node.get("rows_scanned", 0))
    rows = [
        ["rows in events", total],
        ["rows in the 28-day window", window],
        ["rows read by the table scan", scan.get("rows_scanned")],
        ["row groups read / in the table", f"{scan.get('row_groups_scanned')} / {scan.get('total_row_groups_to_scan')}"],
        ["scan filter", scan.get("extra_info", {}).get("Filters", "").replace("\n", " ")],
    ]
    scanned = scan.get("rows_scanned")
    print_table(f"User features of day {args.days}: rows read by the scan", ["measure", "rows"], rows)
    print(f"\nJSON: {write_json('feature_scan', {'days': args.days, 'total': total, 'window': window, 'scanned': scanned})}")


def _operators(nodes: list[dict]):
    for node in nodes:
        yield node
        yield from _operators(node.get("children", []))


if __name__ == "__main__":
    main()
