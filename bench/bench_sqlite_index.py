"""The diff write of one day into a large SQLite online store, in variants of the bulk writer.

Two switches: Feast's second index on entity_key full or emptied (the default empties it,
``online_store.sqlite_entity_index: false``), and writing only the values that changed
(the default) or every value of a changed entity. ``--online-db`` is a copy of the home's
``online.db`` taken when it reflected the day before ``--day``. The script copies that
file once per variant. Into each copy it writes the rows of ``--day``'s partitions that
differ from the day before, as the day's diff write does.

    python bench/bench_sqlite_index.py --home HOME --online-db COPY_OF_DAY_BEFORE.db --day 2024-03-30
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, write_json  # noqa: E402
from feast import FeatureStore  # noqa: E402

from freshrank.config import load_settings  # noqa: E402
from freshrank.feature_store import repo_config  # noqa: E402
from freshrank.features import ENTITY_KEYS, FEATURE_VIEWS, feature_columns, partition_path  # noqa: E402
from freshrank.online_writer import changed_column, changed_rows, set_entity_index, write_sqlite  # noqa: E402

VARIANTS = {
    "index full, every value of a changed entity": (True, False),
    "index emptied, every value of a changed entity": (False, False),
    "index full, changed values": (True, True),
    "index emptied, changed values (default)": (False, True),
}
"""Per variant: Feast's entity_key index full, and only changed values written."""


def prepare_copy(source: Path, target: Path, full: bool) -> None:
    """Copy the SQLite file and set the entity_key index of every view's table, outside the timed write.

    The copy is flushed to disk first, so the timed write's commit does not also flush it.
    """
    shutil.copyfile(source, target)
    os.sync()
    connection = sqlite3.connect(target)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in (name for name in tables if name.endswith(FEATURE_VIEWS)):
            set_entity_index(connection, table, full=full)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Home with the partitions of --day and the day before.")
    parser.add_argument("--online-db", type=Path, required=True, help="Copy of online.db that reflects the day before --day.")
    parser.add_argument("--day", type=date.fromisoformat, required=True, help="Day whose diff write is timed, YYYY-MM-DD.")
    args = parser.parse_args()

    settings = load_settings(args.home)
    previous = args.day - timedelta(days=1)
    tables = {
        view: changed_rows(
            partition_path(settings.offline_dir, view, args.day),
            partition_path(settings.offline_dir, view, previous),
            list(ENTITY_KEYS[view]),
            feature_columns(view, settings.features),
            settings.duckdb_memory,
        )
        for view in FEATURE_VIEWS
    }
    entities = sum(table.num_rows for table in tables.values())

    rows, payload = [], {"day": args.day.isoformat(), "entity_rows": entities, "machine": machine(), "seconds": {}}
    with tempfile.TemporaryDirectory(dir=args.online_db.parent) as tmp:
        for name, (full, changed_only) in VARIANTS.items():
            config = repo_config(settings)
            config.online_store.path = str(Path(tmp) / "online.db")
            store = FeatureStore(config=config, repo_path=str(settings.feast_dir))
            prepare_copy(args.online_db, Path(config.online_store.path), full)
            values = 0
            began = time.perf_counter()
            for view, table in tables.items():
                features = feature_columns(view, settings.features)
                if not changed_only:
                    table = table.drop_columns([changed_column(feature) for feature in features])
                values += write_sqlite(store, view, table, features, entity_index=full).values
            seconds = time.perf_counter() - began
            payload["seconds"][name] = seconds
            payload.setdefault("values", {})[name] = values
            rows.append([name, f"{entities:,}", f"{values:,}", f"{seconds:.1f}", f"{entities / seconds:,.0f}"])

    size = args.online_db.stat().st_size / 1e9
    print_table(f"Diff write of {args.day} into a {size:.1f} GB SQLite file", ["variant", "entity rows", "values written", "seconds", "entity rows/s"], rows)
    print(f"\nJSON: {write_json('sqlite_index', payload)}")


if __name__ == "__main__":
    main()
