"""The category of each item at serving time, the key of its user x category features.

A training row looks up its user x category features by its item's category as the item
features of the day before show it (``freshrank.retrieval_window.item_categories_seen``).
Serving does the same with the item features of the day the online store reflects: the
``category`` column of that day's item partition, read once per new partition and held in
memory. Items missing there (unknown, or out of every window) have no category, so their
user x category features are NaN, as in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from freshrank.features import partition_path, previous_partition

logger = logging.getLogger(__name__)

ITEM_VIEW = "item_features"


@dataclass(frozen=True)
class ItemCategories:
    """Category per item id, read from one item-feature partition.

    Attributes:
        mapping: Category of each item with one; items without are absent.
        source: (path, inode, mtime, size) of the partition read, () when none was found.
    """

    mapping: dict[str, str]
    source: tuple = ()

    def of(self, item_ids: Sequence[str]) -> list[str | None]:
        """Return the category of each item, None where it has none."""
        return [self.mapping.get(item) for item in item_ids]


EMPTY = ItemCategories(mapping={})


def item_partition_at(offline_dir: Path, day: date | None) -> Path | None:
    """Return the item partition of ``day``, or the newest one before it; the newest of all when ``day`` is None."""
    if day is not None and (exact := partition_path(offline_dir, ITEM_VIEW, day)).exists():
        return exact
    return previous_partition(offline_dir, ITEM_VIEW, day or date.max)


def _signature(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def load_item_categories(offline_dir: Path, day: date | None, current: ItemCategories = EMPTY) -> ItemCategories:
    """Return the categories of the item partition of ``day`` (see ``item_partition_at``).

    ``current`` is returned as is when it was read from the same, unchanged file.
    """
    path = item_partition_at(offline_dir, day)
    if path is None:
        return EMPTY
    signature = _signature(path)
    if signature == current.source:
        return current
    table = pq.read_table(path, columns=["item_id", "category"])
    mapping = {
        item: category
        for item, category in zip(table.column("item_id").to_pylist(), table.column("category").to_pylist())
        if item is not None and category is not None
    }
    logger.info("item categories of %s: %d items", path.name, len(mapping))
    return ItemCategories(mapping=mapping, source=signature)
