"""freshrank's use of Feast: apply the repo, materialize one day, read back, build training rows."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.faults import crash_point
from freshrank.features import ENTITY_KEYS, FEATURE_VIEWS, feature_columns, partition_path
from freshrank.increments import day_bounds

logger = logging.getLogger(__name__)

FEAST_PROJECT = "freshrank"
_APPLIED: dict[tuple, FeatureStore] = {}


def repo_config(settings: Settings) -> RepoConfig:
    """Build the Feast configuration of a home: DuckDB offline store, SQLite or Redis online store."""
    if settings.online_store.type == "redis":
        # skip_dedup: overwrite like SQLite. By default Feast's Redis store skips a row whose
        # event timestamp is not newer than the stored one, so a corrected day would never land.
        online = {"type": "redis", "connection_string": settings.online_store.connection_string, "skip_dedup": True}
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return RepoConfig(
        project=FEAST_PROJECT,
        provider="local",
        registry=str(settings.feast_dir / "registry.db"),
        online_store=online,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=str(settings.feast_dir),
    )


def open_store(settings: Settings, apply: bool = True) -> FeatureStore:
    """Open the home's feature store; the first call in a process applies the definitions."""
    from feature_repo.features import build_definitions

    key = (str(settings.home), settings.online_store.type, settings.online_store.connection_string)
    if key in _APPLIED:
        return _APPLIED[key]
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=repo_config(settings), repo_path=str(settings.feast_dir))
    if apply:
        store.apply(build_definitions(settings.offline_dir, settings.features))
        _APPLIED[key] = store
    return store


def feature_refs(settings: Settings, views: tuple[str, ...] = FEATURE_VIEWS) -> list[str]:
    """Return ``view:feature`` references of the given views, in a stable order."""
    return [f"{view}:{name}" for view in views for name in feature_columns(view, settings.features)]


def model_feature_names(settings: Settings) -> list[str]:
    """Return the feature column names the ranking model uses, in training order."""
    return [ref.split(":", 1)[1] for ref in feature_refs(settings)]


def newest_feature_day(settings: Settings) -> date | None:
    """Return the newest day that has a partition of every feature view."""
    days = None
    for view in FEATURE_VIEWS:
        found = {path.stem for path in (settings.offline_dir / view).glob("*.parquet")}
        days = found if days is None else days & found
    return date.fromisoformat(max(days)) if days else None


def materialize_day(settings: Settings, day: date, store: FeatureStore | None = None) -> tuple[datetime, datetime]:
    """Bring the online store up to date from ``day`` on, and return the window written.

    ``materialize(start, end)`` rather than ``materialize_incremental``: the latter keeps a
    high-water mark and would skip a late or corrected day. For the newest day the window
    is that day. For an older day (a late or corrected one) the window runs to the newest
    feature day: Feast writes the newest row of each entity in the window, so a rewritten
    older day cannot overwrite values of a later day, in SQLite and in Redis alike.
    """
    store = store or open_store(settings)
    for view in FEATURE_VIEWS:
        if not partition_path(settings.offline_dir, view, day).exists():
            raise FeatureStoreError(
                f"no {view} partition for {day} under {settings.offline_dir / view}; compute the features first"
            )
    newest = max(day, newest_feature_day(settings) or day)
    start, _ = day_bounds(day, settings.zone)
    _, end = day_bounds(newest, settings.zone)
    if settings.online_store.writer == "feast":
        store.materialize(start_date=start, end_date=end, feature_views=list(FEATURE_VIEWS))
    else:
        bulk_materialize(settings, store, day, newest)
    crash_point("feature_store.after_materialize")
    return start, end


def bulk_materialize(settings: Settings, store: FeatureStore, first: date, last: date) -> dict[str, int]:
    """Write the newest row per entity of the partitions ``first`` .. ``last`` with the bulk writer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from freshrank.online_writer import write_redis, write_sqlite

    write = write_redis if settings.online_store.type == "redis" else write_sqlite
    written = {}
    for view in FEATURE_VIEWS:
        paths = [
            partition_path(settings.offline_dir, view, first + timedelta(days=offset))
            for offset in range((last - first).days + 1)
        ]
        tables = [pq.read_table(path) for path in paths if path.exists()]
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        stats = write(store, view, table, feature_columns(view, settings.features))
        written[view] = stats.entities
    return written


@dataclass
class ProbeResult:
    """Comparison of online values with the offline partitions for a sample of entities."""

    entities: int = 0
    values: int = 0
    mismatches: list[dict] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.mismatches


def expected_online_rows(settings: Settings, view: str, first: date, last: date) -> pd.DataFrame:
    """Return the newest offline row per entity among the partitions ``first`` .. ``last``."""
    paths = [
        partition_path(settings.offline_dir, view, first + timedelta(days=offset))
        for offset in range((last - first).days + 1)
    ]
    frames = [pd.read_parquet(path) for path in paths if path.exists()]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True).sort_values("event_timestamp", kind="stable")
    return rows.drop_duplicates(list(ENTITY_KEYS[view]), keep="last").reset_index(drop=True)


def probe_online(settings: Settings, day: date, store: FeatureStore | None = None, seed: int = 0) -> ProbeResult:
    """Read a sample of entities back from the online store and compare with the offline values.

    The sample comes from ``day``'s partitions; the expected value of an entity is its newest
    offline row up to the newest feature day, which is what ``materialize_day`` writes.
    """
    store = store or open_store(settings)
    newest = max(day, newest_feature_day(settings) or day)
    result = ProbeResult()
    for view in FEATURE_VIEWS:
        offline = pd.read_parquet(partition_path(settings.offline_dir, view, day))
        if offline.empty:
            continue
        keys = list(ENTITY_KEYS[view])
        sample = offline.sample(n=min(settings.online_store.probe_sample, len(offline)), random_state=seed)[keys]
        if newest > day:
            sample = sample.merge(expected_online_rows(settings, view, day, newest), on=keys, how="left")
        else:
            sample = sample.merge(offline, on=keys, how="left")
        names = feature_columns(view, settings.features)
        online = store.get_online_features(
            features=[f"{view}:{name}" for name in names],
            entity_rows=sample[keys].to_dict("records"),
        ).to_df()
        result.entities += len(sample)
        for name in names:
            expected = sample[name].to_numpy(dtype="float64")
            actual = pd.to_numeric(online[name], errors="coerce").to_numpy(dtype="float64")
            same = np.isclose(expected, actual, equal_nan=True)
            result.values += len(same)
            for index in np.flatnonzero(~same)[:5]:
                result.mismatches.append(
                    {
                        "view": view,
                        "entity": {key: sample[key].iloc[index] for key in keys},
                        "feature": name,
                        "offline": _json_float(expected[index]),
                        "online": _json_float(actual[index]),
                    }
                )
    return result


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def historical_features(settings: Settings, entity_rows: pd.DataFrame, store: FeatureStore | None = None) -> pd.DataFrame:
    """Join features point-in-time onto ``entity_rows`` (user_id, item_id, event_timestamp).

    Each row gets, per view, the newest feature row at or before its ``event_timestamp``
    within the view's ttl, so labels of day ``d`` stamped at the start of ``d`` see the
    features of ``d - 1`` and older, never of ``d`` itself.
    """
    store = store or open_store(settings)
    if entity_rows.empty:
        return entity_rows.assign(**{name: pd.Series(dtype="float64") for name in model_feature_names(settings)})
    job = store.get_historical_features(entity_df=entity_rows, features=feature_refs(settings))
    joined = job.to_df()
    missing = [name for name in model_feature_names(settings) if name not in joined.columns]
    if missing:
        raise FeatureStoreError(f"historical features lack columns {missing}; run `freshrank features apply`")
    return joined


def online_features_for(settings: Settings, view: str, keys: dict[str, str], store: FeatureStore | None = None) -> dict:
    """Return the online values of one entity of a view (for `freshrank features`)."""
    store = store or open_store(settings)
    names = feature_columns(view, settings.features)
    response = store.get_online_features(features=[f"{view}:{name}" for name in names], entity_rows=[keys])
    return {name: values[0] for name, values in response.to_dict().items()}


def day_start(day: date, settings: Settings) -> pd.Timestamp:
    """Return the UTC instant at which ``day`` starts in the business timezone."""
    start, _ = day_bounds(day, settings.zone)
    return pd.Timestamp(start)


def offline_dir_has(settings: Settings, day: date) -> bool:
    """Report whether all feature partitions of ``day`` exist."""
    return all(partition_path(settings.offline_dir, view, day).exists() for view in FEATURE_VIEWS)

