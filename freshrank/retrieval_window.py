"""The feature partitions a point-in-time join needs, so that retrieval cost does not grow with history.

Each day's partition of a view contains a row for every entity active in the view's
windows on that day, and an all-null expiry row for each entity that left them since
the previous partition. So a join at an instant that can read day ``s`` (the newest day
whose features are visible then) finds in partition ``s`` alone what it would find
in the whole history. An entity missing from ``s`` either never had a row within the
ttl, or its newest earlier row is an expiry row; both give null features. When the
partition of ``s`` is missing, the join reads every partition of the ttl before it,
which is what Feast's ttl lets it see.

``windowed_feature_views`` builds the project's feature views over a temporary folder of
links to those partitions; Feast's DuckDB offline store then runs its usual join on them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from feast import FeatureView

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.features import FEATURE_VIEWS, feature_day_seen_at, partition_path, view_window_days


def needed_partitions(settings: Settings, instants: pd.Series) -> dict[str, list[Path]]:
    """Return, per feature view, the partition files a point-in-time join at ``instants`` reads.

    Args:
        settings: Settings of the home (offline folder, feature windows, timezone).
        instants: Entity-row timestamps (timezone-aware).

    Returns:
        Per view, existing partition files, oldest first.

    Raises:
        FeatureStoreError: A view has no partition at all.
    """
    seen = {feature_day_seen_at(instant, settings.zone) for instant in pd.to_datetime(instants, utc=True).unique()}
    needed = {}
    for view in FEATURE_VIEWS:
        ttl_days = view_window_days(view, settings.features)
        paths: set[Path] = set()
        for day in seen:
            paths.update(_partitions_for(settings, view, day, ttl_days))
        if not paths:
            paths.add(_any_partition(settings, view))
        needed[view] = sorted(paths)
    return needed


def _partitions_for(settings: Settings, view: str, day: date, ttl_days: int) -> list[Path]:
    exact = partition_path(settings.offline_dir, view, day)
    if exact.exists():
        return [exact]
    candidates = (partition_path(settings.offline_dir, view, day - timedelta(days=back)) for back in range(1, ttl_days + 2))
    return [path for path in candidates if path.exists()]


def every_view_has_a_partition(settings: Settings) -> bool:
    """Return whether every view has a partition for the join to read; a new home has none yet."""
    return all(any((settings.offline_dir / view).glob("*.parquet")) for view in FEATURE_VIEWS)


def _any_partition(settings: Settings, view: str) -> Path:
    """Return one partition of the view: the join needs a table with the view's columns even when no row can match."""
    found = sorted((settings.offline_dir / view).glob("*.parquet"))
    if not found:
        raise FeatureStoreError(
            f"no {view} partition under {settings.offline_dir / view}; compute the features first (`freshrank features compute`)"
        )
    return found[-1]


def item_categories_seen(settings: Settings, instants: pd.Series, item_ids: pd.Series) -> pd.Series:
    """Return, per row, the category of its item as the point-in-time join at its instant reads it.

    The category is the ``category`` column of the newest item-feature row visible at the
    instant (see ``needed_partitions``), so a training row reads the category its user x
    category features are keyed by exactly as serving does: from the item features of the
    day before. An item without a visible row, or whose row is an expiry row, gets None.
    """
    stamps = pd.to_datetime(instants, utc=True)
    seen = stamps.map({instant: feature_day_seen_at(instant, settings.zone) for instant in stamps.unique()})
    ttl_days = view_window_days("item_features", settings.features)
    categories = pd.Series([None] * len(item_ids), index=item_ids.index, dtype="object")
    for day in seen.unique():
        paths = _partitions_for(settings, "item_features", day, ttl_days)
        if not paths:
            continue
        frames = [pd.read_parquet(path, columns=["item_id", "category", "event_timestamp"]) for path in paths]
        newest = pd.concat(frames, ignore_index=True).sort_values("event_timestamp", kind="stable")
        mapping = newest.drop_duplicates("item_id", keep="last").set_index("item_id")["category"]
        rows = seen == day
        categories[rows] = item_ids[rows].map(mapping).to_numpy()
    return categories.where(categories.notna(), None)


@contextlib.contextmanager
def windowed_feature_views(settings: Settings, instants: pd.Series) -> Iterator[list[FeatureView]]:
    """Yield the project's feature views with sources that read only the needed partitions.

    The views are built by ``feature_repo.features.build_definitions`` over a temporary
    folder of symbolic links, which is removed when the block ends.
    """
    from feature_repo.features import build_definitions

    needed = needed_partitions(settings, instants)
    with tempfile.TemporaryDirectory(prefix="freshrank-retrieval-") as folder:
        for view, paths in needed.items():
            (Path(folder) / view).mkdir()
            for path in paths:
                os.symlink(path.resolve(), Path(folder) / view / path.name)
        objects = build_definitions(Path(folder), settings.features)
        yield [item for item in objects if isinstance(item, FeatureView)]
