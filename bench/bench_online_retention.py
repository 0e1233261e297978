"""Size of the SQLite online store as entities leave their windows: expiry rows deleted or written as nulls.

Lands the synthetic shop one day at a time (ingest, validation, features) and writes each
day into two online stores, one with ``online_store.delete_expired`` on (the default) and
one with it off. The second home links the feature partitions of the first, so both
stores take the same rows. With more users than a day's events reach, and a short user x
item window (``--user-item-window-days``), entities leave their windows every day once
the windows are full. Per reported day and store: entity rows written and deleted, the
write's seconds, the entities in the online tables and the bytes of the database file in
use (pages minus free pages).

    python bench/bench_online_retention.py [--events 100000] [--users 200000] [--days 45] [--user-item-window-days 14]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sqlite3
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402
from feast.infra.online_stores.helpers import compute_table_id  # noqa: E402

from freshrank.config import Settings, load_settings, save_settings  # noqa: E402
from freshrank.feature_store import open_store, write_online  # noqa: E402
from freshrank.features import FEATURE_VIEWS, feature_columns, write_feature_partition  # noqa: E402
from freshrank.increments import landed_days  # noqa: E402
from freshrank.quality import validate_staged  # noqa: E402
from freshrank.staging import load_staged, stage_increment  # noqa: E402
from freshrank.synthetic import ShopSpec, generate_shop  # noqa: E402
from freshrank.warehouse import publish_increment  # noqa: E402


def build_homes(root: Path, args: argparse.Namespace) -> tuple[Settings, Settings]:
    """Create the home that deletes expiry rows and the one that keeps them, sharing feature partitions."""
    deleting = load_settings(root / "deleting")
    features = deleting.features.model_copy(update={"user_item_window_days": args.user_item_window_days})
    save_settings(deleting.model_copy(update={"features": features}))
    deleting = load_settings(deleting.home)
    keeping = deleting.model_copy(
        update={"home": root / "keeping", "online_store": deleting.online_store.model_copy(update={"delete_expired": False})}
    )
    save_settings(keeping)
    keeping = load_settings(keeping.home)
    deleting.offline_dir.mkdir(parents=True, exist_ok=True)
    keeping.offline_dir.parent.mkdir(parents=True, exist_ok=True)
    keeping.offline_dir.symlink_to(deleting.offline_dir, target_is_directory=True)
    spec = ShopSpec(days=args.days, users=args.users, items=args.items, seed=11, events_per_day=args.events)
    generate_shop(deleting.landing_dir, spec)
    return deleting, keeping


def land_day(settings: Settings, day: date) -> int:
    """Stage, validate and publish the day's events and compute its feature partitions; return the events."""
    staged = stage_increment(settings, day)
    outcome = validate_staged(settings, day)
    if not outcome.result.success:
        raise SystemExit(f"{day} failed validation: {[failed.expectation for failed in outcome.result.failed()]}")
    publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
    for view in FEATURE_VIEWS:
        write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone)
    return staged.rows


def stored_entities(settings: Settings) -> tuple[int, int]:
    """Return the entities in the online tables (rows over features per view) and the bytes of the file in use."""
    store = open_store(settings)
    versioning = store.config.registry.enable_online_feature_view_versioning
    connection = sqlite3.connect(settings.feast_dir / "online.db")
    try:
        entities = 0
        for view in FEATURE_VIEWS:
            table = compute_table_id(store.config.project, store.get_feature_view(view), versioning)
            rows = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            entities += rows // len(feature_columns(view, settings.features))
        pages, free, size = (connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size"))
    finally:
        connection.close()
    return entities, (pages - free) * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="Events per synthetic weekday.")
    parser.add_argument("--users", type=int, default=200_000, help="Users of the synthetic shop.")
    parser.add_argument("--items", type=int, default=20_000, help="Items of the synthetic shop.")
    parser.add_argument("--days", type=int, default=45, help="Days to land, one after another.")
    parser.add_argument("--user-item-window-days", type=int, default=14, help="Window of the user x item view.")
    parser.add_argument("--every", type=int, default=5, help="Report every this many days, and the last day.")
    args = parser.parse_args()

    rows, days_json = [], []
    with tempfile.TemporaryDirectory() as scratch:
        homes = build_homes(Path(scratch), args)
        days = landed_days(homes[0].landing_dir)
        for number, day in enumerate(days, start=1):
            events = land_day(homes[0], day)
            record = {"day": day.isoformat(), "events": events}
            for name, settings in zip(("deleted", "nulls"), homes):
                with contextlib.redirect_stdout(io.StringIO()):
                    write = write_online(settings, day, open_store(settings))
                entities, used = stored_entities(settings)
                record[name] = {
                    "mode": write.mode,
                    "written": write.total_rows,
                    "deleted": sum(write.deleted.values()),
                    "seconds": write.seconds,
                    "online_entities": entities,
                    "used_bytes": used,
                }
                if number % args.every == 0 or number == len(days):
                    rows.append([number, events, name, write.mode, write.total_rows, sum(write.deleted.values()), write.seconds, entities, used / 2**20])
            days_json.append(record)
            print(f"day {number} ({day}): {record['deleted']['online_entities']:,} entities online with deletes, {record['nulls']['online_entities']:,} with nulls", flush=True)

    header = ["day", "events", "expiry rows", "write", "entity rows written", "entities deleted", "write s", "entities online", "MiB in use"]
    print_table(f"Online store over {args.days} days ({args.events:,} events a weekday, {args.users:,} users)", header, rows)
    print(f"\nJSON: {write_json('online_retention', {'args': vars(args), 'days': days_json})}")


if __name__ == "__main__":
    main()
