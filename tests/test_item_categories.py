"""Tests of the item categories serving keys its user x category lookups by (models.item_categories)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd

from freshrank.features import partition_path
from models.item_categories import EMPTY, item_partition_at, load_item_categories


def write_items(offline_dir: Path, day: date, categories: dict[str, str | None]) -> Path:
    path = partition_path(offline_dir, "item_features", day)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"item_id": list(categories), "category": list(categories.values())})
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return path


def test_reads_the_partition_of_the_day(tmp_path: Path) -> None:
    write_items(tmp_path, date(2024, 3, 9), {"i1": "A"})
    write_items(tmp_path, date(2024, 3, 10), {"i1": "B", "i2": "C", "i4": None})

    categories = load_item_categories(tmp_path, date(2024, 3, 9))

    assert categories.mapping == {"i1": "A"}
    assert categories.of(["i1", "i2"]) == ["A", None]


def test_items_without_category_are_absent(tmp_path: Path) -> None:
    write_items(tmp_path, date(2024, 3, 10), {"i1": "B", "i4": None})

    categories = load_item_categories(tmp_path, date(2024, 3, 10))

    assert categories.mapping == {"i1": "B"}


def test_missing_day_falls_back_to_the_newest_before(tmp_path: Path) -> None:
    older = write_items(tmp_path, date(2024, 3, 8), {"i1": "A"})
    write_items(tmp_path, date(2024, 3, 12), {"i1": "B"})

    assert item_partition_at(tmp_path, date(2024, 3, 10)) == older
    assert load_item_categories(tmp_path, date(2024, 3, 10)).mapping == {"i1": "A"}


def test_without_day_reads_the_newest(tmp_path: Path) -> None:
    write_items(tmp_path, date(2024, 3, 8), {"i1": "A"})
    write_items(tmp_path, date(2024, 3, 12), {"i1": "B"})

    assert load_item_categories(tmp_path, None).mapping == {"i1": "B"}


def test_no_partition_gives_empty(tmp_path: Path) -> None:
    assert load_item_categories(tmp_path, date(2024, 3, 10)) is EMPTY
    assert EMPTY.of(["i1"]) == [None]


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    write_items(tmp_path, date(2024, 3, 10), {"i1": "A"})
    first = load_item_categories(tmp_path, date(2024, 3, 10))

    assert load_item_categories(tmp_path, date(2024, 3, 10), first) is first


def test_rewritten_partition_is_read_again(tmp_path: Path) -> None:
    write_items(tmp_path, date(2024, 3, 10), {"i1": "A"})
    first = load_item_categories(tmp_path, date(2024, 3, 10))
    # A corrected day replaces the file under a new inode.
    write_items(tmp_path, date(2024, 3, 10), {"i1": "B", "i2": "A"})

    second = load_item_categories(tmp_path, date(2024, 3, 10), first)

    assert second.mapping == {"i1": "B", "i2": "A"}
