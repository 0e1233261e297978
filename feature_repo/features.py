"""Feast objects of the ranking model: entities, sources, feature views, feature services.

Every feature view reads a folder of daily Parquet partitions written by
``freshrank.features``; the folder needs ``ParquetFormat`` because the DuckDB offline
store cannot read a folder, or a glob path, without it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, String

from freshrank.config import FeatureConfig, load_settings
from freshrank.features import ENTITY_KEYS, FEATURE_VIEWS, feature_columns, view_window_days

RANKING_SERVICE = "ranking_v1"
"""Feature service of the ranking model; a new feature set gets a new version, not an edit."""

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A shopper (customer or session).")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A product of the catalogue.")
category = Entity(
    name="category", join_keys=["category"], value_type=ValueType.STRING, description="A product category of the catalogue."
)

_ENTITIES = {"user_id": user, "item_id": item, "category": category}
_DESCRIPTIONS = {
    "user_features": "Activity of a user over trailing windows: counts per event type, revenue, recency.",
    "item_features": "Popularity of an item over trailing windows: counts, distinct users, price, trend.",
    "user_item_features": "History of a user with an item: repeat views, carts and purchases, recency.",
    "user_category_features": "History of a user with a category: views, purchases, share of purchases, recency.",
}


def build_definitions(offline_dir: Path, config: FeatureConfig) -> list:
    """Build the Feast objects for the partitions under ``offline_dir``."""
    views = []
    for view in FEATURE_VIEWS:
        source = FileSource(
            name=f"{view}_source",
            path=str(offline_dir / view),
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        schema = [Field(name=key, dtype=String) for key in ENTITY_KEYS[view]]
        schema += [Field(name=name, dtype=Float64) for name in feature_columns(view, config)]
        views.append(
            FeatureView(
                name=view,
                entities=[_ENTITIES[key] for key in ENTITY_KEYS[view]],
                ttl=timedelta(days=view_window_days(view, config)),
                schema=schema,
                source=source,
                online=True,
                description=_DESCRIPTIONS[view],
            )
        )
    service = FeatureService(
        name=RANKING_SERVICE,
        features=views,
        description="All features of the XGBoost ranking model, version 1.",
    )
    return [user, item, category, *views, service]


# Module-level objects for `feast apply` run in this folder.
if os.environ.get("FRESHRANK_HOME"):
    _settings = load_settings()
    _objects = build_definitions(_settings.offline_dir, _settings.features)
    user_features, item_features, user_item_features, user_category_features, ranking_v1 = _objects[3:]
