"""Online ranking: Feast online features for a user and candidate items, scored by a registry model.

One ranking request reads the user's features with one Feast online store call, the user x
candidate features with one batched call, and the user x category features of the candidates'
categories with another (``models.item_categories`` maps items to categories). Item features change only when a day is
materialized, so the service keeps them in memory (``ItemSnapshot``) and re-reads them after
each materialization. With ``serving.item_features: online`` they are read per request with
one more batched call instead.

``ServingEngine`` holds the state a request needs (models, item snapshot, candidate source,
search catalogue) in one immutable ``ServingState`` and replaces it as a whole from a watcher
thread. A request reads the state once, so it is ranked wholly by one model version even while
a deployment is being picked up.

Entities without a row in the online store (unknown users and items, the cold-start path) get
NaN for every feature: the point-in-time join of training gives the same NaN to entities
without history, so the model has learned a score for them. Responses list them as unknown.

The online store contains recency as last-event times. ``FeatureLayout.model_values``
derives the model's ``*_days_since_*`` features from them as of the newest feature day the
online store reflects (its watermark), as training does for the day before each label day.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pa_dataset
import xgboost as xgb
from feast import FeatureStore, FeatureView
from feast.errors import FeatureViewNotFoundException
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from freshrank.config import Settings
from freshrank.errors import (
    ConfigError,
    FeatureMismatchError,
    FeatureStoreError,
    ModelRegistryError,
    RankingInputError,
    ServingUnavailableError,
)
from freshrank.feature_store import repo_config
from freshrank.features import (
    ENTITY_KEYS,
    FEATURE_VIEWS,
    RECENCY_FEATURES,
    days_since,
    feature_columns,
    feature_day_seen_at,
)
from freshrank.online_watermark import online_as_of_us
from freshrank.warehouse import connect
from models.ab import assign_variant
from models.item_categories import EMPTY as NO_CATEGORIES
from models.item_categories import load_item_categories
from models.registry import CHAMPION_FILE, ModelRegistry

logger = logging.getLogger(__name__)

USER_VIEW, ITEM_VIEW, PAIR_VIEW, CATEGORY_VIEW = FEATURE_VIEWS
"""The four feature views: user, item, user x item and user x category features."""

CONTROL, TREATMENT = "control", "treatment"
"""A/B variants: the champion, and the second version named in ``serving.ab``."""

SNAPSHOT_BATCH_ITEMS = 2000
"""Items per online store call while the item-feature snapshot is read."""

_NUMERIC_KINDS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "bool_val"})
_WORD = re.compile(r"\w+")


# Feature layout and online reads


@dataclass(frozen=True)
class FeatureLayout:
    """Positions of each feature view's columns in the model's input matrix.

    Attributes:
        model_columns: Feature names in the order the model was trained on.
        view_columns: Per feature view, its stored feature names in Feast order.
        positions: Per feature view, the model column index of each of its features.
        recency: Per feature view, the indices in ``view_columns`` of the last-event time
            columns (Unix epoch microseconds) that the model sees as days since that event.
    """

    model_columns: tuple[str, ...]
    view_columns: dict[str, tuple[str, ...]]
    positions: dict[str, np.ndarray]
    recency: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureLayout:
        """Build the layout of the home's feature views (the same order as training)."""
        view_columns = {view: tuple(feature_columns(view, settings.features)) for view in FEATURE_VIEWS}
        model_names = {view: [RECENCY_FEATURES[view].get(name, name) for name in view_columns[view]] for view in FEATURE_VIEWS}
        model_columns = tuple(name for view in FEATURE_VIEWS for name in model_names[view])
        if len(set(model_columns)) != len(model_columns):
            raise FeatureStoreError(
                f"feature names repeat across views {list(FEATURE_VIEWS)}; each feature name must be unique "
                "because the model's input columns are named by feature name alone"
            )
        index = {name: position for position, name in enumerate(model_columns)}
        positions = {view: np.array([index[name] for name in names], dtype=np.intp) for view, names in model_names.items()}
        recency = {
            view: np.array([j for j, name in enumerate(names) if name in RECENCY_FEATURES[view]], dtype=np.intp)
            for view, names in view_columns.items()
        }
        return cls(model_columns=model_columns, view_columns=view_columns, positions=positions, recency=recency)

    def model_values(self, view: str, block: FeatureBlock) -> np.ndarray:
        """Return a block's values as model inputs: last-event times become days since, as of each row's ``event_ts``."""
        columns = self.recency.get(view)
        if columns is None or len(columns) == 0:
            return block.values
        values = block.values.copy()
        values[:, columns] = days_since(block.event_ts[:, None] * 1e6, values[:, columns])
        return values


@dataclass(frozen=True)
class FeatureBlock:
    """One feature view's values for a list of entities, in request order.

    Attributes:
        values: ``(rows, features)`` float64 stored values, NaN where a value is null or the
            entity unknown.
        found: Per row, whether the entity has a row in the online store.
        event_ts: Per row, the feature timestamp its values hold for, in Unix seconds, NaN if
            not found: the row's own event timestamp, or the timestamp of the newest day the
            online store reflects when that is later (a diff write leaves an unchanged row
            with the timestamp of the day it last changed).
    """

    values: np.ndarray
    found: np.ndarray
    event_ts: np.ndarray

    @classmethod
    def missing(cls, rows: int, features: int) -> FeatureBlock:
        """Return a block of ``rows`` unknown entities."""
        return cls(
            values=np.full((rows, features), np.nan),
            found=np.zeros(rows, dtype=bool),
            event_ts=np.full(rows, np.nan),
        )

    def oldest_age_s(self, now: float) -> float | None:
        """Return the age in seconds of the oldest feature row used, or None when no row was found."""
        if not self.found.any():
            return None
        return float(now - np.nanmin(self.event_ts[self.found]))


class OnlineFeatureReader:
    """Reads feature views from the Feast online store, one ``online_read`` call per view.

    ``online_read`` is the method every Feast online store implements (SQLite, Redis, ...),
    reached through the provider of the home's Feast configuration. ``get_online_features``
    calls it too and then builds a response protobuf and converts every value. For 100 user x
    item keys on SQLite that took 2.1 ms at the median, against 0.8 ms for ``online_read`` and
    the decoding here (Feast 0.67, 2 vCPUs shared with other jobs).

    Each reader owns its provider and so its own online store connection. Feast's SQLite
    store keeps one connection per store object, so a thread that reads concurrently with the
    request path (the snapshot refresh) gets a reader of its own.

    Args:
        settings: Settings of the home; the Feast registry must exist (run the daily loop first).
        layout: Feature layout of the home.

    Raises:
        FeatureStoreError: The home has no Feast registry yet, or a feature view is not applied.
    """

    def __init__(self, settings: Settings, layout: FeatureLayout) -> None:
        registry_path = settings.feast_dir / "registry.db"
        if not registry_path.exists():
            raise FeatureStoreError(
                f"no Feast registry at {registry_path}; run the daily loop (`freshrank run` or `freshrank demo`) "
                "so that feature views are applied and materialized before serving"
            )
        self.layout = layout
        self.zone = settings.zone
        self.offline_dir = settings.offline_dir
        self.categories = NO_CATEGORIES
        self.store = FeatureStore(config=repo_config(settings), repo_path=str(settings.feast_dir))
        self.provider = get_provider(self.store.config)
        self._views = self._feature_views()
        self.as_of_s: float | None = None
        self.refresh_as_of()

    def refresh_registry(self) -> None:
        """Re-read the Feast registry file, the feature view definitions and the online store's watermark."""
        self.store.refresh_registry()
        self._views = self._feature_views()
        self.refresh_as_of()

    def refresh_as_of(self) -> float | None:
        """Re-read the feature timestamp of the newest day the online store reflects, in Unix seconds.

        While the store has no valid watermark (it was written before watermarks existed, or
        replaced), the last known value stays. Without any known value, each row counts from
        its own event timestamp. The item categories follow the same day: they are re-read
        when that day's item partition is another file than the one read before.
        """
        as_of_us = online_as_of_us(self.store.config, self.zone)
        if as_of_us is not None:
            self.as_of_s = as_of_us / 1e6
        day = None if self.as_of_s is None else feature_day_seen_at(pd.Timestamp(self.as_of_s, unit="s", tz="UTC"), self.zone)
        self.categories = load_item_categories(self.offline_dir, day, self.categories)
        return self.as_of_s

    def _feature_views(self) -> dict[str, FeatureView]:
        views = {}
        for view in FEATURE_VIEWS:
            try:
                views[view] = self.store.get_feature_view(view, allow_registry_cache=True)
            except FeatureViewNotFoundException as exc:
                raise FeatureStoreError(
                    f"feature view {view} is not in the Feast registry {self.store.config.registry.path}; "
                    "run the daily loop so that the feature repo is applied"
                ) from exc
        return views

    def read(self, view: str, entities: Mapping[str, Sequence[str]]) -> FeatureBlock:
        """Read one view for a list of entities in one online store call.

        Args:
            view: Feature view to read.
            entities: Columnar entity rows holding the view's join keys, e.g.
                ``{"user_id": [...], "item_id": [...]}``; other keys are ignored.

        Returns:
            The view's features, rows in the order of ``entities``.
        """
        join_keys = list(ENTITY_KEYS[view])
        columns = [entities[key] for key in join_keys]
        entity_keys = [
            EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(string_val=value) for value in values])
            for values in zip(*columns)
        ]
        names = self.layout.view_columns[view]
        rows = self.provider.online_read(
            config=self.store.config, table=self._views[view], entity_keys=entity_keys, requested_features=list(names)
        )
        return _block_from_rows(rows, names, self.as_of_s)


def _block_from_rows(rows: Sequence[tuple], names: Sequence[str], as_of_s: float | None = None) -> FeatureBlock:
    """Turn ``online_read`` rows of ``(event_timestamp, {feature: ValueProto})`` into a float block.

    An entity is found when its row has an event timestamp after the epoch: the SQLite store
    returns ``(None, None)`` for a missing entity, the Redis store a dict of empty values
    stamped at the epoch. A found row's ``event_ts`` is at least ``as_of_s``.
    """
    values = np.full((len(rows), len(names)), np.nan)
    found = np.zeros(len(rows), dtype=bool)
    event_ts = np.full(len(rows), np.nan)
    for row, (stamp, data) in enumerate(rows):
        if data is None or stamp is None:
            continue
        seconds = stamp.timestamp()
        if seconds <= 0:
            continue
        found[row] = True
        event_ts[row] = seconds if as_of_s is None else max(seconds, as_of_s)
        for j, name in enumerate(names):
            value = data.get(name)
            if value is not None:
                kind = value.WhichOneof("val")
                if kind in _NUMERIC_KINDS:
                    values[row, j] = getattr(value, kind)
    return FeatureBlock(values=values, found=found, event_ts=event_ts)


# Item-feature snapshot


@dataclass(frozen=True)
class ItemSnapshot:
    """Item features of every item in the offline partitions, read from the online store at ``read_at``.

    Attributes:
        positions: Row of each item id in ``block``.
        block: Item features; an extra last row of NaN stands for unknown items.
        read_at: Unix time the snapshot was read.
        materialization_signature: Signature of the materialization records it follows.
    """

    positions: dict[str, int]
    block: FeatureBlock
    read_at: float
    materialization_signature: tuple = ()

    @property
    def size(self) -> int:
        """Number of items in the snapshot."""
        return len(self.positions)

    def take(self, item_ids: Sequence[str]) -> FeatureBlock:
        """Return the item features of ``item_ids``, unknown items as NaN rows."""
        unknown_row = len(self.positions)
        rows = np.fromiter((self.positions.get(item, unknown_row) for item in item_ids), dtype=np.intp, count=len(item_ids))
        return FeatureBlock(values=self.block.values[rows], found=self.block.found[rows], event_ts=self.block.event_ts[rows])

    def newest_event_ts(self) -> float | None:
        """Return the newest feature event timestamp in the snapshot, in Unix seconds."""
        stamps = self.block.event_ts[self.block.found]
        return float(stamps.max()) if len(stamps) else None


def materialized_item_ids(settings: Settings) -> list[str]:
    """Return every item id of the offline item-feature partitions, sorted.

    These are the items the online store can hold: materialization writes exactly the rows
    of these partitions. Temporary files of a partition being written start with a dot and
    are skipped.
    """
    folder = settings.offline_dir / ITEM_VIEW
    if not folder.is_dir():
        return []
    table = pa_dataset.dataset(str(folder), format="parquet").to_table(columns=["item_id"])
    return sorted(set(table.column("item_id").to_pylist()) - {None})


def read_item_snapshot(
    reader: OnlineFeatureReader, item_ids: Sequence[str], signature: tuple = ()
) -> ItemSnapshot:
    """Read the item features of ``item_ids`` from the online store, in batches."""
    names = reader.layout.view_columns[ITEM_VIEW]
    blocks = []
    for start in range(0, len(item_ids), SNAPSHOT_BATCH_ITEMS):
        batch = list(item_ids[start : start + SNAPSHOT_BATCH_ITEMS])
        blocks.append(reader.read(ITEM_VIEW, {"item_id": batch}))
    blocks.append(FeatureBlock.missing(1, len(names)))
    block = FeatureBlock(
        values=np.vstack([b.values for b in blocks]),
        found=np.concatenate([b.found for b in blocks]),
        event_ts=np.concatenate([b.event_ts for b in blocks]),
    )
    positions = {item: row for row, item in enumerate(item_ids)}
    logger.info("item snapshot: %d items, %d with online features", len(item_ids), int(block.found.sum()))
    return ItemSnapshot(positions=positions, block=block, read_at=time.time(), materialization_signature=signature)


# Models and scoring


@dataclass(frozen=True)
class LoadedModel:
    """A registry version loaded for serving, predicting with one thread."""

    version: str
    booster: xgb.Booster
    loaded_at: float


def load_model(registry: ModelRegistry, version: str, layout: FeatureLayout) -> LoadedModel:
    """Load a registry version for per-request prediction.

    The booster predicts with one thread: under concurrent requests, XGBoost's default thread
    count made a 100-row prediction wait for cores (p99 15.5 ms against 0.43 ms with one
    thread, xgboost 3.2 on 2 vCPUs).

    Raises:
        ModelRegistryError: The version is unknown or its file is damaged.
        FeatureMismatchError: The model's features differ from the home's feature views.
    """
    booster = registry.load(version)
    model_columns = tuple(booster.feature_names or ())
    if model_columns != layout.model_columns:
        raise FeatureMismatchError(
            f"{version} was trained on features {list(model_columns)}, but the feature views now give "
            f"{list(layout.model_columns)}; deploy a model trained on the current features"
        )
    booster.set_param({"nthread": 1})
    booster.inplace_predict(np.full((1, len(model_columns)), np.nan, dtype=np.float32), validate_features=False)
    return LoadedModel(version=version, booster=booster, loaded_at=time.time())


def score_matrix(
    layout: FeatureLayout,
    user: FeatureBlock,
    items: FeatureBlock,
    pairs: FeatureBlock,
    categories: FeatureBlock,
    dtype: type = np.float32,
) -> np.ndarray:
    """Assemble the ``(candidates, features)`` input matrix in model column order.

    The user's single row is repeated for every candidate. float32 is what training feeds
    XGBoost too (``models.training``), so offline and online scores agree bit for bit.
    """
    rows = len(items.found)
    matrix = np.empty((rows, len(layout.model_columns)), dtype=dtype)
    matrix[:, layout.positions[USER_VIEW]] = layout.model_values(USER_VIEW, user)[0]
    matrix[:, layout.positions[ITEM_VIEW]] = layout.model_values(ITEM_VIEW, items)
    matrix[:, layout.positions[PAIR_VIEW]] = layout.model_values(PAIR_VIEW, pairs)
    matrix[:, layout.positions[CATEGORY_VIEW]] = layout.model_values(CATEGORY_VIEW, categories)
    return matrix


def read_user_categories(reader: OnlineFeatureReader, user_id: str, item_ids: Sequence[str]) -> FeatureBlock:
    """Read the user x category features of each candidate's category, one online call for the distinct categories.

    Candidates without a known category get NaN rows, as training rows do.
    """
    categories = reader.categories.of(item_ids)
    distinct = sorted({category for category in categories if category is not None})
    width = len(reader.layout.view_columns[CATEGORY_VIEW])
    if not distinct:
        return FeatureBlock.missing(len(item_ids), width)
    block = reader.read(CATEGORY_VIEW, {"user_id": [user_id] * len(distinct), "category": distinct})
    missing_row = len(distinct)
    row_of = {category: row for row, category in enumerate(distinct)}
    rows = np.fromiter((row_of.get(category, missing_row) for category in categories), dtype=np.intp, count=len(categories))
    padded = FeatureBlock(
        values=np.vstack([block.values, np.full((1, width), np.nan)]),
        found=np.append(block.found, False),
        event_ts=np.append(block.event_ts, np.nan),
    )
    return FeatureBlock(values=padded.values[rows], found=padded.found[rows], event_ts=padded.event_ts[rows])


@dataclass(frozen=True)
class RankResult:
    """Candidates of one request ordered by model score.

    Attributes:
        user_id: The user ranked for.
        model_version: Registry version that scored every candidate.
        item_ids: Candidates, highest score first (ties keep the request order).
        scores: Purchase probabilities, aligned with ``item_ids``.
        user_known: Whether the user has a row in the online store.
        unknown_item_ids: Candidates without item features, in request order.
        feature_age_s: Per view, seconds since the event timestamp of the oldest feature row
            used; None when no row of that view was found.
        item_features_source: ``snapshot`` or ``online``.
        snapshot_age_s: Seconds since the item snapshot was read; None for ``online``.
        pair_rows_found: Candidates with a user x item feature row.
        category_rows_found: Candidates with a user x category feature row for their category.
    """

    user_id: str
    model_version: str
    item_ids: list[str]
    scores: list[float]
    user_known: bool
    unknown_item_ids: list[str]
    feature_age_s: dict[str, float | None]
    item_features_source: str
    snapshot_age_s: float | None
    pair_rows_found: int
    category_rows_found: int = 0


def check_candidates(item_ids: Sequence[str], max_candidates: int | None = None) -> None:
    """Raise RankingInputError unless ``item_ids`` is a non-empty list of distinct, non-empty ids."""
    if not item_ids:
        raise RankingInputError("item_ids is empty; send at least one candidate item id")
    if max_candidates is not None and len(item_ids) > max_candidates:
        raise RankingInputError(
            f"item_ids has {len(item_ids)} ids, more than serving.max_candidates ({max_candidates}); send fewer candidates"
        )
    if len(set(item_ids)) != len(item_ids):
        seen: set[str] = set()
        duplicates = sorted({item for item in item_ids if item in seen or seen.add(item)})
        raise RankingInputError(f"item_ids repeats {duplicates[:10]}; send each candidate once")
    empty = [position for position, item in enumerate(item_ids) if not item]
    if empty:
        raise RankingInputError(f"item_ids has empty ids at positions {empty[:10]}")


def rank_candidates(
    reader: OnlineFeatureReader,
    model: LoadedModel,
    user_id: str,
    item_ids: Sequence[str],
    snapshot: ItemSnapshot | None,
) -> RankResult:
    """Look up the features of one user and its candidates and rank the candidates with ``model``.

    Three online store calls: one for the user, one batched call for the user x item features
    of all candidates, and one for the user x category features of their categories. Without
    a snapshot, a fourth batched call reads their item features.

    Args:
        reader: Online feature reader of the request path.
        model: The model that scores every candidate.
        user_id: The user.
        item_ids: Distinct candidate item ids (see ``check_candidates``).
        snapshot: Item features held in memory; None reads them online.
    """
    layout = reader.layout
    user = reader.read(USER_VIEW, {"user_id": [user_id]})
    candidates = {"user_id": [user_id] * len(item_ids), "item_id": list(item_ids)}
    pairs = reader.read(PAIR_VIEW, candidates)
    items = reader.read(ITEM_VIEW, candidates) if snapshot is None else snapshot.take(item_ids)
    categories = read_user_categories(reader, user_id, item_ids)
    matrix = score_matrix(layout, user, items, pairs, categories)
    scores = np.asarray(model.booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    now = time.time()
    return RankResult(
        user_id=user_id,
        model_version=model.version,
        item_ids=[item_ids[i] for i in order],
        scores=scores[order].tolist(),
        user_known=bool(user.found[0]),
        unknown_item_ids=[item for item, known in zip(item_ids, items.found) if not known],
        feature_age_s={
            USER_VIEW: user.oldest_age_s(now),
            ITEM_VIEW: items.oldest_age_s(now),
            PAIR_VIEW: pairs.oldest_age_s(now),
            CATEGORY_VIEW: categories.oldest_age_s(now),
        },
        item_features_source="online" if snapshot is None else "snapshot",
        snapshot_age_s=None if snapshot is None else now - snapshot.read_at,
        pair_rows_found=int(pairs.found.sum()),
        category_rows_found=int(categories.found.sum()),
    )


# Candidate source and catalogue, built from the warehouse


@dataclass(frozen=True)
class CandidateSource:
    """Popular items overall and per category, and each user's top categories.

    Popularity is the number of distinct users with any event on the item over the last
    ``popularity_window_days`` published days. Ties go to more purchases, then to the item id.

    Attributes:
        popular: Item ids, most popular first.
        by_category: Per category, its item ids, most popular first.
        user_categories: Per user, its categories in the window, most events first.
        built_for: Champion version at build time; a new deployment triggers a rebuild.
        newest_day: Newest published event day (ISO), or None for an empty warehouse.
        built_at: Unix time of the build.
    """

    popular: tuple[str, ...]
    by_category: dict[str, tuple[str, ...]]
    user_categories: dict[str, tuple[str, ...]]
    built_for: str | None
    newest_day: str | None
    built_at: float

    def candidates(self, user_id: str, top_categories: int, per_category: int, popular: int) -> list[str]:
        """Return the user's candidates: popular items of its top categories, then popular items overall."""
        chosen: dict[str, None] = {}
        for category in self.user_categories.get(user_id, ())[:top_categories]:
            chosen.update(dict.fromkeys(self.by_category.get(category, ())[:per_category]))
        chosen.update(dict.fromkeys(self.popular[:popular]))
        return list(chosen)

    @functools.cached_property
    def popularity_rank(self) -> dict[str, int]:
        """Position of each popular item in ``popular`` (0 = most popular), computed once."""
        return {item: position for position, item in enumerate(self.popular)}


_POPULARITY_SQL = """
SELECT item_id,
       count(DISTINCT user_id) AS users,
       count(*) FILTER (event_type = 'purchase') AS purchases,
       arg_max(category, event_time) FILTER (category IS NOT NULL) AS category
FROM events
WHERE event_day BETWEEN ? AND ?
GROUP BY item_id
ORDER BY users DESC, purchases DESC, item_id
"""

_USER_CATEGORIES_SQL = """
SELECT user_id, category
FROM (
    SELECT user_id, category, count(*) AS events
    FROM events
    WHERE event_day BETWEEN ? AND ? AND user_id IS NOT NULL AND category IS NOT NULL
    GROUP BY user_id, category
)
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY events DESC, category) <= ?
ORDER BY user_id, events DESC, category
"""

_ITEM_CATEGORIES_SQL = """
SELECT item_id, arg_max(category, event_time) FILTER (category IS NOT NULL) AS category
FROM events
GROUP BY item_id
ORDER BY item_id
"""


def build_candidate_source(settings: Settings, built_for: str | None) -> tuple[CandidateSource, pd.DataFrame]:
    """Read popularity, user top categories and the item catalogue from the warehouse.

    Returns:
        The candidate source, and the warehouse items as a frame of ``item_id`` and ``category``.

    Raises:
        ServingUnavailableError: The warehouse does not exist yet.
        duckdb.Error: The warehouse cannot be read, e.g. while a writer holds its lock.
    """
    if not settings.warehouse_path.exists():
        raise ServingUnavailableError(f"no warehouse at {settings.warehouse_path}; run the daily loop first")
    window = settings.serving.recommend.popularity_window_days
    with connect(settings.warehouse_path, read_only=True) as con:
        newest = con.execute("SELECT max(event_day) FROM events").fetchone()[0]
        items = con.execute(_ITEM_CATEGORIES_SQL).fetchdf()
        if newest is None:
            popularity = pd.DataFrame(columns=["item_id", "users", "purchases", "category"])
            user_top = pd.DataFrame(columns=["user_id", "category"])
        else:
            first = newest - pd.Timedelta(days=window - 1)
            popularity = con.execute(_POPULARITY_SQL, [first, newest]).fetchdf()
            user_top = con.execute(
                _USER_CATEGORIES_SQL, [first, newest, max(settings.serving.recommend.top_categories, 1)]
            ).fetchdf()
    by_category = {
        str(category): tuple(group["item_id"])
        for category, group in popularity.dropna(subset=["category"]).groupby("category", sort=False)
    }
    user_categories = {str(user): tuple(group["category"]) for user, group in user_top.groupby("user_id", sort=False)}
    source = CandidateSource(
        popular=tuple(popularity["item_id"]),
        by_category=by_category,
        user_categories=user_categories,
        built_for=built_for,
        newest_day=None if newest is None else str(newest)[:10],
        built_at=time.time(),
    )
    logger.info(
        "candidate source for %s: %d popular items, %d categories, %d users with categories",
        built_for, len(source.popular), len(by_category), len(user_categories),
    )
    return source, items


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Catalogue:
    """Items searchable by the words of their title and category.

    A query word matches an item word that starts with it, so ``heart`` finds ``hearts``.
    An item matches a query when every query word matches one of its words.

    Attributes:
        item_ids: Items, in index order.
        titles: Title per item, or None when the catalogue file has none.
        categories: Category per item, or None.
    """

    item_ids: tuple[str, ...]
    titles: tuple[str | None, ...]
    categories: tuple[str | None, ...]
    _postings: dict[str, frozenset[int]] = field(repr=False, compare=False, default_factory=dict)
    _sorted_words: tuple[str, ...] = field(repr=False, compare=False, default=())

    @classmethod
    def build(cls, items: pd.DataFrame) -> Catalogue:
        """Index a frame of ``item_id``, ``title`` and ``category`` (title and category may be null)."""
        item_ids = tuple(str(item) for item in items["item_id"])
        titles = tuple(_optional_text(value) for value in items["title"])
        categories = tuple(_optional_text(value) for value in items["category"])
        postings: dict[str, set[int]] = {}
        for position, (title, category) in enumerate(zip(titles, categories)):
            for word in _words(f"{title or ''} {category or ''}"):
                postings.setdefault(word, set()).add(position)
        frozen = {word: frozenset(positions) for word, positions in postings.items()}
        return cls(item_ids, titles, categories, frozen, tuple(sorted(frozen)))

    def __len__(self) -> int:
        return len(self.item_ids)

    def search(self, query: str) -> list[str]:
        """Return the item ids matching every word of ``query``, in catalogue order.

        Raises:
            RankingInputError: ``query`` contains no word.
        """
        words = _words(query)
        if not words:
            raise RankingInputError(f"q {query!r} contains no word (letters or digits) to search for")
        matched: set[int] | None = None
        for word in words:
            positions = self._prefix_positions(word)
            matched = positions if matched is None else matched & positions
            if not matched:
                return []
        return [self.item_ids[position] for position in sorted(matched or ())]

    def _prefix_positions(self, prefix: str) -> set[int]:
        positions: set[int] = set()
        start = bisect.bisect_left(self._sorted_words, prefix)
        for word in self._sorted_words[start:]:
            if not word.startswith(prefix):
                break
            positions |= self._postings[word]
        return positions


def _optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def catalogue_path(settings: Settings) -> Path:
    """Return the catalogue file of the home (``serving.catalogue``)."""
    return settings.home / settings.serving.catalogue


def read_catalogue_file(path: Path) -> pd.DataFrame:
    """Read a catalogue file (Parquet or CSV) of ``item_id``, ``title`` and optionally ``category``.

    Raises:
        ConfigError: The file lacks a column, has an unsupported suffix, or repeats an item id.
    """
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        raise ConfigError(f"{path}: catalogue files must be .parquet or .csv; set serving.catalogue accordingly")
    missing = [column for column in ("item_id", "title") if column not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: the catalogue lacks the columns {missing}; it needs item_id, title and optionally category")
    if "category" not in frame.columns:
        frame["category"] = None
    frame = frame[["item_id", "title", "category"]].astype(object)
    if frame["item_id"].isna().any():
        rows = [int(row) + 1 for row in np.flatnonzero(frame["item_id"].isna().to_numpy())[:5]]
        raise ConfigError(f"{path}: item_id is empty in data rows {rows}; every row needs an item id")
    frame["item_id"] = frame["item_id"].astype(str)
    repeated = frame["item_id"][frame["item_id"].duplicated()].unique().tolist()
    if repeated:
        raise ConfigError(f"{path}: item ids {repeated[:10]} appear more than once; keep one row per item")
    return frame


def build_catalogue(warehouse_items: pd.DataFrame, catalogue_file: Path | None) -> Catalogue:
    """Merge the warehouse items (id, category) with the titles of the catalogue file, when there is one.

    A category from the file wins over the warehouse's; items only in the file are searchable
    too (they rank as unknown items).
    """
    items = warehouse_items[["item_id", "category"]].astype(object).assign(title=None)
    if catalogue_file is not None and catalogue_file.exists():
        extra = read_catalogue_file(catalogue_file).set_index("item_id")
        merged = items.set_index("item_id").join(extra, how="outer", lsuffix="_warehouse")
        merged["category"] = merged["category"].where(merged["category"].notna(), merged["category_warehouse"])
        items = merged.reset_index()[["item_id", "title", "category"]]
    return Catalogue.build(items.sort_values("item_id", kind="stable"))


ONLINE_RETAIL_PRODUCT_CODE = r"^\d{5}"
"""StockCodes of products in UCI Online Retail (five digits, then maybe letters); the rest are service lines."""


def catalogue_from_online_retail(source: Path) -> pd.DataFrame:
    """Build a catalogue from a UCI Online Retail table: StockCode to its most frequent Description.

    The freshrank importer drops Description because the canonical events have no title, so
    this is the way to give ``GET /search`` titles for that dataset.

    Raises:
        ImportFormatError: The table lacks StockCode or Description.
    """
    from freshrank.importers.landing import id_strings, read_table

    layout = "UCI Online Retail table (.parquet, .csv or .xlsx) with StockCode and Description columns"
    raw = read_table(Path(source), ("StockCode", "Description"), layout)
    frame = pd.DataFrame({"item_id": id_strings(raw["StockCode"]), "title": raw["Description"].astype("string").str.strip()})
    frame = frame[frame["item_id"].str.contains(ONLINE_RETAIL_PRODUCT_CODE, na=False) & frame["title"].fillna("").ne("")]
    counts = frame.groupby(["item_id", "title"], sort=True).size().rename("rows").reset_index()
    best = counts.sort_values(["item_id", "rows", "title"], ascending=[True, False, True], kind="stable")
    catalogue = best.drop_duplicates("item_id")[["item_id", "title"]].assign(category=None).reset_index(drop=True)
    logger.info("catalogue from %s: %d items with a description", source, len(catalogue))
    return catalogue


def write_catalogue(settings: Settings, catalogue: pd.DataFrame) -> Path:
    """Write a catalogue frame to the home's catalogue file, replacing it atomically."""
    path = catalogue_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    frame = catalogue[["item_id", "title", "category"]].astype({"item_id": str})
    if path.suffix == ".csv":
        frame.to_csv(temporary, index=False)
    else:
        frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return path


# The serving engine


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads, replaced as a whole when anything changes.

    Attributes:
        control: The champion.
        treatment: The A/B treatment version, or None without a split.
        snapshot: Item features in memory, or None when they are read online.
        candidates: Candidate source of ``/recommend``, or None while it cannot be built.
        catalogue: Search catalogue, or None while it cannot be built.
        candidates_error: Why the candidate source is missing, if it is.
    """

    control: LoadedModel
    treatment: LoadedModel | None
    snapshot: ItemSnapshot | None
    candidates: CandidateSource | None
    catalogue: Catalogue | None
    candidates_error: str | None = None


class RefreshCounts:
    """Counts of watcher refreshes by component and outcome, written by the watcher and read by ``/metrics``."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def add(self, component: str, outcome: str) -> None:
        """Count one refresh of ``component`` (model, candidates, snapshot) with ``outcome`` (success, failure)."""
        with self._lock:
            self._counts[(component, outcome)] = self._counts.get((component, outcome), 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Return a copy of the counts."""
        with self._lock:
            return dict(self._counts)


def _file_signature(path: Path) -> tuple:
    """Return (inode, mtime, size) of a file, or () when it is missing; an atomic replace changes it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _materialization_signature(settings: Settings) -> tuple:
    """Return the names and mtimes of the ``online_features`` records the daily loop writes after each materialization."""
    folder = settings.reports_dir / "online_features"
    if not folder.is_dir():
        return ()
    return tuple(sorted((entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(folder) if entry.name.endswith(".json")))


class ServingEngine:
    """Ranks requests with the deployed models and keeps models, item features and candidates fresh.

    ``start`` loads everything and starts a watcher thread that runs every
    ``serving.reload_interval_s`` seconds. The watcher loads a newly deployed champion and
    rebuilds the candidate source and catalogue for it. It re-reads the item snapshot after a
    new materialization record, or when the snapshot is older than ``serving.snapshot_max_age_s``.
    A failed refresh is logged and counted, the previous state keeps serving, and the next
    tick retries.

    Args:
        settings: Settings of the home.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.serving.default_k > settings.serving.max_k:
            raise ConfigError(
                f"serving.default_k ({settings.serving.default_k}) exceeds serving.max_k ({settings.serving.max_k}); "
                "lower default_k or raise max_k"
            )
        self.settings = settings
        self.layout = FeatureLayout.from_settings(settings)
        self.registry = ModelRegistry(settings.registry_dir)
        self.refresh_counts = RefreshCounts()
        self._reader: OnlineFeatureReader | None = None
        self._refresh_reader: OnlineFeatureReader | None = None
        self._state: ServingState | None = None
        self._champion_signature: tuple = ()
        self._failures: dict[str, str] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._listeners: list[Callable[[ServingState], None]] = []

    # Lifecycle

    def start(self, watch: bool = True) -> ServingState:
        """Load models, item snapshot, candidate source and catalogue; then start the watcher.

        Raises:
            ModelRegistryError: No champion is deployed, or the A/B treatment version is unknown.
            FeatureStoreError: The Feast registry is missing.
        """
        self._reader = OnlineFeatureReader(self.settings, self.layout)
        self._refresh_reader = OnlineFeatureReader(self.settings, self.layout)
        self._champion_signature = _file_signature(self.settings.registry_dir / CHAMPION_FILE)
        control = load_model(self.registry, self._require_champion(), self.layout)
        treatment = self._load_treatment()
        snapshot = self._read_snapshot() if self.settings.serving.item_features == "snapshot" else None
        self._publish(ServingState(control=control, treatment=treatment, snapshot=snapshot, candidates=None, catalogue=None))
        self.check_for_updates()
        if watch:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="freshrank-serving-watcher", daemon=True)
            self._watcher.start()
        logger.info(
            "serving %s (treatment %s), %s item features",
            control.version, treatment.version if treatment else None, self.settings.serving.item_features,
        )
        return self.state

    def stop(self) -> None:
        """Stop the watcher thread and wait for it."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None

    def add_listener(self, listener: Callable[[ServingState], None]) -> None:
        """Call ``listener`` with every new state (the service re-freezes the garbage collector this way)."""
        self._listeners.append(listener)

    @property
    def state(self) -> ServingState:
        """The current state; read it once per request."""
        if self._state is None:
            raise ServingUnavailableError("the serving engine is not started; call start() first")
        return self._state

    @property
    def current_state(self) -> ServingState | None:
        """The current state, or None before ``start`` (for metrics that must not fail)."""
        return self._state

    @property
    def reader(self) -> OnlineFeatureReader:
        """Online feature reader of the request path."""
        if self._reader is None:
            raise ServingUnavailableError("the serving engine is not started; call start() first")
        return self._reader

    # Requests

    def choose_model(self, state: ServingState, user_id: str) -> tuple[str, LoadedModel]:
        """Return the user's A/B variant and its model (the champion without a split)."""
        if state.treatment is not None and assign_variant(user_id, self.settings.serving.ab) == TREATMENT:
            return TREATMENT, state.treatment
        return CONTROL, state.control

    def rank(self, state: ServingState, user_id: str, item_ids: Sequence[str]) -> tuple[str, RankResult]:
        """Rank candidates for a user with the model of the user's variant.

        Raises:
            RankingInputError: The candidates are empty, repeated or too many.
        """
        check_candidates(item_ids, self.settings.serving.max_candidates)
        variant, model = self.choose_model(state, user_id)
        return variant, rank_candidates(self.reader, model, user_id, item_ids, state.snapshot)

    def recommend_candidates(self, state: ServingState, user_id: str) -> list[str]:
        """Return the ``/recommend`` candidates of a user.

        Raises:
            ServingUnavailableError: The candidate source could not be built yet.
        """
        if state.candidates is None:
            raise ServingUnavailableError(f"the candidate source is not loaded: {state.candidates_error}")
        config = self.settings.serving.recommend
        chosen = state.candidates.candidates(user_id, config.top_categories, config.items_per_category, config.popular_items)
        return chosen[: self.settings.serving.max_candidates]

    def search_candidates(self, state: ServingState, query: str) -> tuple[list[str], int]:
        """Return the catalogue matches of ``query`` (most popular first, capped) and their total number.

        Raises:
            ServingUnavailableError: The catalogue could not be built yet.
            RankingInputError: The query contains no word.
        """
        if state.catalogue is None or state.candidates is None:
            raise ServingUnavailableError(f"the search catalogue is not loaded: {state.candidates_error}")
        matches = state.catalogue.search(query)
        rank_of = state.candidates.popularity_rank
        unranked = len(rank_of)
        ordered = sorted(matches, key=lambda item: (rank_of.get(item, unranked), item))
        return ordered[: self.settings.serving.max_candidates], len(matches)

    def warm_up(self) -> None:
        """Rank one request per model so that first requests do not pay for lazy initialization."""
        state = self.state
        items = list(state.candidates.popular[:10]) if state.candidates and state.candidates.popular else ["warm-up-item"]
        for model in (state.control, state.treatment):
            if model is not None:
                rank_candidates(self.reader, model, "warm-up-user", items, state.snapshot)

    # Refresh

    def check_for_updates(self) -> list[str]:
        """Run one watcher tick: refresh the model, then the candidates, then the item snapshot.

        Each component is refreshed, counted and published on its own, so a failing one (a
        locked warehouse, an unreachable online store) neither blocks nor undoes the others.
        A failure keeps the previous component serving and is retried at the next tick.

        Returns:
            The components that were replaced.
        """
        refreshed = []
        steps = (
            ("features_as_of", self._refresh_as_of),
            ("model", self._refresh_model),
            ("candidates", self._refresh_candidates),
            ("snapshot", self._refresh_snapshot),
        )
        for component, refresh in steps:
            try:
                state = refresh(self.state)
            except Exception as exc:  # noqa: BLE001 - the watcher must survive; the previous state keeps serving
                self.refresh_counts.add(component, "failure")
                self._log_failure(component, exc)
                continue
            if state is not None:
                self.refresh_counts.add(component, "success")
                if self._failures.pop(component, None) is not None:
                    logger.info("refreshing the %s works again", component)
                self._publish(state)
                refreshed.append(component)
        return refreshed

    def _watch(self) -> None:
        interval = self.settings.serving.reload_interval_s
        while not self._stop.wait(interval):
            refreshed = self.check_for_updates()
            if refreshed:
                logger.info("refreshed %s; serving %s", ", ".join(refreshed), self.state.control.version)

    def _log_failure(self, component: str, exc: Exception) -> None:
        """Log a refresh failure with its traceback once per distinct error, then at debug level."""
        message = f"{type(exc).__name__}: {exc}"
        if self._failures.get(component) == message:
            logger.debug("refreshing the %s failed again: %s", component, message)
            return
        self._failures[component] = message
        logger.error(
            "refreshing the %s failed; the previous one keeps serving and each tick retries: %s",
            component, message, exc_info=exc,
        )

    def _refresh_as_of(self, state: ServingState) -> None:
        """Re-read the online store's watermark, so the days-since features count to its newest day."""
        self.reader.refresh_as_of()
        return None

    def _refresh_model(self, state: ServingState) -> ServingState | None:
        """Load the champion when its pointer file changed (a deployment or rollback)."""
        signature = _file_signature(self.settings.registry_dir / CHAMPION_FILE)
        if signature == self._champion_signature:
            return None
        version = self._require_champion()
        model = None if version == state.control.version else load_model(self.registry, version, self.layout)
        self._champion_signature = signature
        return None if model is None else replace(state, control=model)

    def _refresh_candidates(self, state: ServingState) -> ServingState | None:
        """Rebuild candidate source and catalogue after a deployment, or after an earlier failure."""
        if state.candidates is not None and state.candidates.built_for == state.control.version:
            return None
        try:
            candidates, items = build_candidate_source(self.settings, state.control.version)
            catalogue = build_catalogue(items, catalogue_path(self.settings))
        except (duckdb.Error, ServingUnavailableError, ConfigError, OSError) as exc:
            if state.candidates_error != str(exc):
                self._publish(replace(state, candidates_error=str(exc)))
            raise
        return replace(state, candidates=candidates, catalogue=catalogue, candidates_error=None)

    def _refresh_snapshot(self, state: ServingState) -> ServingState | None:
        """Re-read the item snapshot after a new materialization record, or when it is too old."""
        snapshot = state.snapshot
        if snapshot is None:
            return None
        max_age = self.settings.serving.snapshot_max_age_s
        too_old = max_age > 0 and time.time() - snapshot.read_at > max_age
        if not too_old and _materialization_signature(self.settings) == snapshot.materialization_signature:
            return None
        return replace(state, snapshot=self._read_snapshot())

    def _publish(self, state: ServingState) -> None:
        self._state = state
        for listener in self._listeners:
            listener(state)

    def _require_champion(self) -> str:
        version = self.registry.champion()
        if version is None:
            raise ModelRegistryError(
                f"no champion is deployed in {self.registry.root}; run the daily loop (`freshrank demo` or "
                "`freshrank run`) or deploy a version before serving"
            )
        return version

    def _load_treatment(self) -> LoadedModel | None:
        ab = self.settings.serving.ab
        if ab.treatment_version is None or ab.treatment_share == 0.0:
            return None
        if ab.treatment_version not in self.registry.versions():
            raise ModelRegistryError(
                f"serving.ab.treatment_version {ab.treatment_version!r} is not a registered version "
                f"(registered: {self.registry.versions()}); name a registered version or unset it"
            )
        return load_model(self.registry, ab.treatment_version, self.layout)

    def _read_snapshot(self) -> ItemSnapshot:
        assert self._refresh_reader is not None and self._reader is not None
        signature = _materialization_signature(self.settings)
        self._refresh_reader.refresh_registry()
        self._reader.refresh_registry()
        return read_item_snapshot(self._refresh_reader, materialized_item_ids(self.settings), signature)


# One-off ranking for the CLI and the demo


@dataclass(frozen=True)
class Ranking:
    """Candidate items ordered by model score, with the model version that scored them."""

    user_id: str
    model_version: str
    items: list[tuple[str, float]]
    unknown_user: bool = False
    unknown_item_ids: tuple[str, ...] = ()


def _one_off(settings: Settings) -> tuple[OnlineFeatureReader, LoadedModel]:
    registry = ModelRegistry(settings.registry_dir)
    version = registry.champion()
    if version is None:
        raise ModelRegistryError("no champion is deployed yet; run the daily loop (`freshrank demo`) first")
    layout = FeatureLayout.from_settings(settings)
    return OnlineFeatureReader(settings, layout), load_model(registry, version, layout)


def rank_items(settings: Settings, user_id: str, item_ids: list[str]) -> Ranking:
    """Rank candidate items for a user with the deployed champion, reading all features online.

    Raises:
        ModelRegistryError: No champion is deployed.
        RankingInputError: The candidates are empty or repeated.
    """
    check_candidates(item_ids)
    reader, model = _one_off(settings)
    result = rank_candidates(reader, model, user_id, item_ids, snapshot=None)
    return Ranking(
        user_id=user_id,
        model_version=result.model_version,
        items=list(zip(result.item_ids, result.scores)),
        unknown_user=not result.user_known,
        unknown_item_ids=tuple(result.unknown_item_ids),
    )


def online_feature_frame(settings: Settings, user_id: str, item_ids: list[str]) -> pd.DataFrame:
    """Return the online features one request would use: one row per candidate, model columns in order."""
    check_candidates(item_ids)
    layout = FeatureLayout.from_settings(settings)
    reader = OnlineFeatureReader(settings, layout)
    user = reader.read(USER_VIEW, {"user_id": [user_id]})
    candidates = {"user_id": [user_id] * len(item_ids), "item_id": list(item_ids)}
    items, pairs = reader.read(ITEM_VIEW, candidates), reader.read(PAIR_VIEW, candidates)
    categories = read_user_categories(reader, user_id, item_ids)
    matrix = score_matrix(layout, user, items, pairs, categories, dtype=np.float64)
    frame = pd.DataFrame(matrix, columns=list(layout.model_columns))
    frame.insert(0, "item_id", list(item_ids))
    frame.insert(0, "user_id", user_id)
    return frame



def serving_ready(settings: Settings) -> list[str]:
    """Return what is missing before the home can be served; an empty list means ready."""
    problems = []
    if not (settings.feast_dir / "registry.db").exists():
        problems.append(f"no Feast registry at {settings.feast_dir / 'registry.db'}")
    if not settings.warehouse_path.exists():
        problems.append(f"no warehouse at {settings.warehouse_path}")
    try:
        if ModelRegistry(settings.registry_dir).champion() is None:
            problems.append(f"no champion deployed in {settings.registry_dir}")
    except ModelRegistryError as exc:
        problems.append(str(exc))
    return problems

