"""freshrank's use of Feast: apply the repo, materialize one day, read back, build training rows.

The feature views store recency as the time of the last event. The model's
``*_days_since_*`` features are derived when features are read (``with_days_since``),
as of the feature day a training row can see, or as of the day the online store reflects.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig

from freshrank.config import Settings
from freshrank.errors import FeatureStoreError
from freshrank.faults import crash_point
from freshrank.features import (
    ENTITY_KEYS,
    FEATURE_VIEWS,
    epoch_us,
    feature_columns,
    feature_day_seen_at,
    feature_timestamp,
    model_feature_columns,
    partition_path,
    with_days_since,
)
from freshrank.increments import day_bounds
from freshrank.online_watermark import (
    feature_config_fingerprint,
    online_as_of_us,
    partition_signature,
    read_watermark,
    watermark_for,
    write_watermark,
)

if TYPE_CHECKING:
    from freshrank.online_writer import WriteStats

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
    """Return the feature column names the ranking model uses, in training order.

    They are the views' stored columns in Feast order, with each recency column
    (``*_last_*_epoch_us``) replaced in place by the ``*_days_since_*`` feature derived from it.
    """
    return [name for view in FEATURE_VIEWS for name in model_feature_columns(view, settings.features)]


def newest_feature_day(settings: Settings) -> date | None:
    """Return the newest day that has a partition of every feature view."""
    days = None
    for view in FEATURE_VIEWS:
        found = {path.stem for path in (settings.offline_dir / view).glob("*.parquet")}
        days = found if days is None else days & found
    return date.fromisoformat(max(days)) if days else None


@dataclass(frozen=True)
class OnlineWrite:
    """One write of feature rows into the online store.

    Attributes:
        start: Start of the first day written.
        end: End of the newest feature day, which the online store reflects afterwards.
        mode: ``diff`` (only rows that changed since the day before) or ``full``.
        reason: Why the write ran in that mode.
        rows: Per feature view, the entity rows written; for ``online_store.writer: feast``,
            the rows of the partitions Feast read, since Feast does not report its writes.
        seconds: Wall time of the write.
        deleted: Per feature view, the entities deleted because their newest row is an
            expiry row (the bulk writer only; Feast's ``materialize`` writes null values).
        values: Per feature view, the (entity, feature) values written (the bulk writer
            only). A diff write into SQLite writes only the values that changed.
        pruned: Per feature view, the entities a full write removed because the newest
            partition no longer holds them (the bulk writer only).
    """

    start: datetime
    end: datetime
    mode: str
    reason: str
    rows: dict[str, int]
    seconds: float
    deleted: dict[str, int] = field(default_factory=dict)
    values: dict[str, int] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        """Entity rows written over all views."""
        return sum(self.rows.values())


def materialize_day(settings: Settings, day: date, store: FeatureStore | None = None) -> tuple[datetime, datetime]:
    """Bring the online store up to date from ``day`` on, and return the window written (see ``write_online``)."""
    write = write_online(settings, day, store)
    return write.start, write.end


def write_online(settings: Settings, day: date, store: FeatureStore | None = None) -> OnlineWrite:
    """Bring the online store up to date from ``day`` on.

    For the newest feature day, when the online store's watermark shows that it contains the
    partitions of the day before, unchanged since, only the rows that changed are written
    (``plan_online_write``). Otherwise the newest row per entity of the partitions ``day`` ..
    newest feature day is written. ``materialize(start, end)`` rather than
    ``materialize_incremental``: the latter keeps a high-water mark and would skip a late or
    corrected day. Feast writes the newest row of each entity in the window, so a rewritten
    older day cannot overwrite values of a later day, in SQLite and in Redis alike.

    Raises:
        FeatureStoreError: A partition of ``day`` is missing.
    """
    store = store or open_store(settings)
    for view in FEATURE_VIEWS:
        if not partition_path(settings.offline_dir, view, day).exists():
            raise FeatureStoreError(
                f"no {view} partition for {day} under {settings.offline_dir / view}; compute the features first"
            )
    newest = max(day, newest_feature_day(settings) or day)
    mode, reason = plan_online_write(settings, store, day, newest)
    first = full_write_first_day(settings, store, day, newest) if mode == "full" else day
    start, _ = day_bounds(first, settings.zone)
    _, end = day_bounds(newest, settings.zone)
    # Signatures are taken before reading the partitions: a partition replaced during the
    # write then no longer matches the watermark, and the next day's write is a full one.
    # The previous watermark stays until the write succeeds (see freshrank.online_watermark).
    watermark = watermark_for(settings, newest, mode)
    began = time.perf_counter()
    deleted: dict[str, int] = {}
    values: dict[str, int] = {}
    pruned: dict[str, int] = {}
    if settings.online_store.writer == "feast":
        store.materialize(start_date=start, end_date=end, feature_views=list(FEATURE_VIEWS))
        rows = {view: _partition_rows(settings, view, day, newest) for view in FEATURE_VIEWS}
    else:
        stats = diff_materialize(settings, store, day) if mode == "diff" else bulk_materialize(settings, store, first, newest)
        rows = {view: view_stats.entities for view, view_stats in stats.items()}
        deleted = {view: view_stats.deleted for view, view_stats in stats.items()}
        values = {view: view_stats.values for view, view_stats in stats.items()}
        pruned = {view: view_stats.pruned for view, view_stats in stats.items()}
    crash_point("feature_store.after_materialize")
    write_watermark(store.config, watermark)
    seconds = time.perf_counter() - began
    write = OnlineWrite(
        start=start, end=end, mode=mode, reason=reason, rows=rows, seconds=seconds, deleted=deleted, values=values, pruned=pruned
    )
    logger.info(
        "%s online write of %s: %d entity rows written and %d entities deleted in %.1f s (%s)",
        mode,
        day,
        write.total_rows,
        sum(deleted.values()),
        write.seconds,
        reason,
    )
    return write


def full_write_first_day(settings: Settings, store: FeatureStore, day: date, newest: date) -> date:
    """Return the first partition a full write of ``day`` reads.

    A full write keeps the newest row per entity of the partitions from this day to
    ``newest``. When the online store missed days (its watermark names a day before
    ``day - 1``, or it has no readable watermark), an entity may have left every window on
    a missed day, so its expiry row exists only in that day's partition. The write then
    starts after the watermark day, and at most ``features.max_window_days`` days back:
    an entity's values expire (the views' ttl) within that span anyway.
    """
    if day < newest:
        return day
    earliest = day - timedelta(days=settings.features.max_window_days - 1)
    try:
        watermark = read_watermark(store.config)
    except FeatureStoreError:
        return earliest
    if watermark is None:
        return earliest
    after_watermark = date.fromisoformat(watermark.day) + timedelta(days=1)
    return min(day, max(earliest, after_watermark))


def plan_online_write(settings: Settings, store: FeatureStore, day: date, newest: date) -> tuple[str, str]:
    """Return ``("diff", reason)`` when writing only the rows changed since ``day - 1`` is exact, else ``("full", reason)``.

    A diff is exact when ``day`` is the newest feature day and the online store contains exactly
    the partitions of ``day - 1`` with the current feature columns: the watermark names that
    day and the size, mtime and inode of each of its partition files, which a recomputed
    (corrected or late) partition changes.
    """
    if settings.online_store.writer == "feast":
        return "full", "online_store.writer is feast, which writes whole partitions"
    if day < newest:
        return "full", f"{day} is older than the newest feature day {newest}, so the write covers {day} .. {newest}"
    try:
        watermark = read_watermark(store.config)
    except FeatureStoreError as exc:
        logger.warning("writing every row of %s: %s", day, exc)
        return "full", str(exc)
    if watermark is None:
        return "full", "the online store has no watermark (its first write, or a new or replaced store)"
    previous = day - timedelta(days=1)
    if watermark.day != previous.isoformat():
        return "full", f"the online store reflects {watermark.day}, not the day before {day}"
    if watermark.feature_config != feature_config_fingerprint(settings):
        return "full", "the feature columns or settings changed since the last online write"
    for view in FEATURE_VIEWS:
        path = partition_path(settings.offline_dir, view, previous)
        if not path.exists() or partition_signature(path) != watermark.partitions.get(view):
            return "full", f"the {view} partition of {previous} was rewritten after the online store took it"
    return "diff", f"the online store contains the partitions of {previous} unchanged"


def diff_materialize(settings: Settings, store: FeatureStore, day: date) -> dict[str, WriteStats]:
    """Write the rows of ``day``'s partitions that differ from ``day - 1``'s; return the write per view.

    Rows left alone keep the event timestamp of the day they last changed, and an entity
    with values last changed within the view's ttl (its window, ``features.view_window_days``).
    It stays unchanged only while it has no new event, because a new event moves its
    last-event time. Meanwhile the events of its earliest day in the window drop out at
    most ``window`` days after it last changed, which changes its window counts or turns
    it into an expiry row. So an unchanged entity with values last changed at most
    ``window - 1`` days before. The SQLite writer rewrites only the changed values of an
    entity, plus the feature row Feast takes the entity's timestamp from
    (``freshrank.online_writer``).
    """

    from freshrank.online_writer import WriteStats, bulk_writer, changed_rows

    write = bulk_writer(settings.online_store)
    previous = day - timedelta(days=1)
    written = {}
    for view in FEATURE_VIEWS:
        features = feature_columns(view, settings.features)
        table = changed_rows(
            partition_path(settings.offline_dir, view, day),
            partition_path(settings.offline_dir, view, previous),
            list(ENTITY_KEYS[view]),
            features,
            settings.duckdb_memory,
        )
        written[view] = write(store, view, table, features) if table.num_rows else WriteStats(entities=0, values=0)
    return written


def _existing_partitions(settings: Settings, view: str, first: date, last: date) -> list[Path]:
    """Return the partition files of ``view`` from ``first`` to ``last`` that exist, oldest first."""
    days = (first + timedelta(days=offset) for offset in range((last - first).days + 1))
    paths = (partition_path(settings.offline_dir, view, day) for day in days)
    return [path for path in paths if path.exists()]


def _partition_rows(settings: Settings, view: str, first: date, last: date) -> int:
    return _row_count(_existing_partitions(settings, view, first, last))


def _row_count(paths: list[Path]) -> int:
    """Return the rows of the Parquet files ``paths``, from their footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def bulk_materialize(settings: Settings, store: FeatureStore, first: date, last: date) -> dict[str, WriteStats]:
    """Write the newest row per entity of the partitions ``first`` .. ``last`` with the bulk writer.

    A view's rows are read and written in buckets of entities (a hash of the join keys),
    about ``online_store.full_write_bucket_rows`` partition rows each, so a full write of a
    large partition keeps one bucket in memory. Each bucket is its own transaction. The
    watermark is written only after every bucket of every view, so an interrupted write
    is repeated whole. Then the entities that partition ``last`` does not hold with values
    are removed (``freshrank.online_prune``): a correction can drop an entity from every
    partition, and then no row would ever reach it.
    """
    from freshrank.online_prune import prune_absent
    from freshrank.online_writer import WriteStats, bulk_writer

    write = bulk_writer(settings.online_store)
    bucket_rows = settings.online_store.full_write_bucket_rows
    written = {}
    for view in FEATURE_VIEWS:
        paths = _existing_partitions(settings, view, first, last)
        written[view] = WriteStats(entities=0, values=0)
        if not paths:
            continue
        buckets = max(1, -(-_row_count(paths) // bucket_rows))
        features = feature_columns(view, settings.features)
        for bucket in range(buckets):
            table = _bucket_rows(settings, paths, list(ENTITY_KEYS[view]), bucket, buckets)
            written[view] = written[view] + write(store, view, table, features)
        newest = partition_path(settings.offline_dir, view, last)
        if newest.exists():
            present = _present_entities(settings, newest, list(ENTITY_KEYS[view]), features, buckets)
            pruned = prune_absent(store, view, present, features, settings.online_store)
            written[view] = written[view] + WriteStats(entities=0, values=0, pruned=pruned)
    return written


def _present_entities(settings: Settings, path: Path, join_keys: list[str], features: list[str], buckets: int):
    """Yield, bucket by bucket, the join keys of the rows of partition ``path`` that have a feature value."""
    from freshrank.warehouse import arrow_query, sql_identifier, sql_string

    keys = ", ".join(sql_identifier(key) for key in join_keys)
    with_value = " OR ".join(f"{sql_identifier(name)} IS NOT NULL" for name in features) or "TRUE"
    for bucket in range(buckets):
        query = f"SELECT {keys} FROM read_parquet({sql_string(path)}) WHERE ({with_value})"
        if buckets > 1:
            query += f" AND hash({keys}) % {buckets} = {bucket}"
        yield arrow_query(query, settings.duckdb_memory)


def _bucket_rows(settings: Settings, paths: list[Path], join_keys: list[str], bucket: int, buckets: int):
    """Read the rows of ``paths`` whose entity falls in ``bucket`` of ``buckets``, columns united by name."""
    from freshrank.warehouse import arrow_query, sql_identifier, sql_string

    files = ", ".join(sql_string(path) for path in paths)
    keys = ", ".join(sql_identifier(key) for key in join_keys)
    query = f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
    if buckets > 1:
        query += f" WHERE hash({keys}) % {buckets} = {bucket}"
    return arrow_query(query, settings.duckdb_memory)


@dataclass
class ProbeResult:
    """Comparison of online values with the offline partitions for a sample of entities."""

    entities: int = 0
    values: int = 0
    mismatches: list[dict] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.mismatches


def expected_online_rows(
    settings: Settings, view: str, first: date, last: date, entities: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Return the newest row per entity of the partitions ``first`` .. ``last``: what the online store should hold.

    With ``entities`` (a frame of the view's join keys), only the rows of those entities are
    read: Arrow filters each partition batch by batch on the key values, so a probe of a few
    entities keeps no whole partition in memory.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(ENTITY_KEYS[view])
    selected, filters = None, None
    if entities is not None:
        selected = pa.Table.from_pandas(entities[keys].drop_duplicates(), preserve_index=False)
        filters = [(key, "in", sorted(set(entities[key]))) for key in keys]
    frames = []
    for path in _existing_partitions(settings, view, first, last):
        table = pq.read_table(path, filters=filters)
        if selected is not None:
            # The filters keep every combination of the key values; the join keeps the entities.
            table = table.join(selected.cast(table.select(keys).schema), keys, join_type="left semi")
        frames.append(table.to_pandas())
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True).sort_values("event_timestamp", kind="stable")
    return rows.drop_duplicates(keys, keep="last").reset_index(drop=True)


def probe_online(settings: Settings, day: date, store: FeatureStore | None = None, seed: int = 0) -> ProbeResult:
    """Read a sample of entities back from the online store and compare with the offline values.

    The sample comes from ``day``'s partitions; the expected value of an entity is its newest
    offline row up to the newest feature day, which is what ``materialize_day`` writes.
    """
    import pyarrow.parquet as pq

    from freshrank.parquet_rows import read_positions, sample_positions

    store = store or open_store(settings)
    newest = max(day, newest_feature_day(settings) or day)
    result = ProbeResult()
    for view in FEATURE_VIEWS:
        path = partition_path(settings.offline_dir, view, day)
        total = pq.ParquetFile(path).metadata.num_rows
        if total == 0:
            continue
        keys = list(ENTITY_KEYS[view])
        # Only the sampled rows are read: a partition can hold millions of entities.
        sample = read_positions(path, sample_positions(total, settings.online_store.probe_sample, seed)).to_pandas()
        if newest > day:
            expected = expected_online_rows(settings, view, day, newest, entities=sample[keys])
            sample = sample[keys].merge(expected, on=keys, how="left")
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

    Rows without a ``category`` column get their item's category as of their instant
    (``item_categories_seen``) for the user x category view; the column is not returned.

    Each row gets, per view, the newest feature row at or before its ``event_timestamp``
    within the view's ttl (read from the partitions it can see, see
    ``freshrank.retrieval_window``), so labels of day ``d`` stamped at the start of ``d`` see the
    features of ``d - 1`` and older, never of ``d`` itself. The ``*_days_since_*`` features
    count to the feature timestamp of the newest day the row can see (``d - 1`` for such labels).
    """
    store = store or open_store(settings)
    if entity_rows.empty:
        return entity_rows.assign(**{name: pd.Series(dtype="float64") for name in model_feature_names(settings)})
    import ibis
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    from freshrank.retrieval_window import item_categories_seen, windowed_feature_views

    categories_given = "category" in entity_rows.columns
    if not categories_given:
        # The user x category view is keyed by the item's category as of the row's instant.
        categories = item_categories_seen(settings, entity_rows["event_timestamp"], entity_rows["item_id"])
        entity_rows = entity_rows.assign(category=categories)
    # Feast's own point-in-time join, over the partitions the rows can see rather than the
    # whole history (freshrank.retrieval_window explains why the result is the same).
    # Feast's DuckDB offline store runs on ibis's default DuckDB backend.
    settings.duckdb_memory.apply(ibis.get_backend())
    with windowed_feature_views(settings, entity_rows["event_timestamp"]) as views:
        job = DuckDBOfflineStore.get_historical_features(
            store.config, views, feature_refs(settings), entity_rows, store.registry, store.project
        )
        joined = job.to_df()
    missing = [name for name in feature_refs(settings) if name.split(":", 1)[1] not in joined.columns]
    if missing:
        raise FeatureStoreError(f"historical features lack columns {missing}; run `freshrank features apply`")
    if not categories_given:
        joined = joined.drop(columns=["category"])
    return with_days_since(joined, seen_feature_timestamps_us(joined["event_timestamp"], settings))


def seen_feature_timestamps_us(instants: pd.Series, settings: Settings) -> np.ndarray:
    """Return, per instant, the feature timestamp (Unix epoch microseconds) of the newest day visible to a join there."""
    stamps = pd.to_datetime(instants, utc=True)
    as_of = {
        instant: epoch_us(feature_timestamp(feature_day_seen_at(instant, settings.zone), settings.zone))
        for instant in stamps.unique()
    }
    return stamps.map(as_of).to_numpy(dtype="float64")


def online_features_for(settings: Settings, view: str, keys: dict[str, str], store: FeatureStore | None = None) -> dict:
    """Return the online values of one entity of a view (for `freshrank features`).

    The stored columns come first, then the ``*_days_since_*`` features derived from the
    recency columns as of the newest day the online store reflects (see ``online_as_of_us``).
    """
    store = store or open_store(settings)
    names = feature_columns(view, settings.features)
    response = store.get_online_features(features=[f"{view}:{name}" for name in names], entity_rows=[keys])
    values = {name: found[0] for name, found in response.to_dict().items()}
    as_of = online_as_of_us(store.config, settings.zone)
    if as_of is None:
        newest = newest_feature_day(settings)
        as_of = None if newest is None else epoch_us(feature_timestamp(newest, settings.zone))
    stored = pd.DataFrame([{name: _float_or_nan(values.get(name)) for name in names}])
    derived = with_days_since(stored, np.nan if as_of is None else as_of)
    for name in model_feature_columns(view, settings.features):
        if name not in values:
            value = float(derived[name].iloc[0])
            values[name] = None if math.isnan(value) else value
    return values


def _float_or_nan(value: object) -> float:
    return float("nan") if value is None else float(value)


def day_start(day: date, settings: Settings) -> pd.Timestamp:
    """Return the UTC instant at which ``day`` starts in the business timezone."""
    start, _ = day_bounds(day, settings.zone)
    return pd.Timestamp(start)


def offline_dir_has(settings: Settings, day: date) -> bool:
    """Report whether all feature partitions of ``day`` exist."""
    return all(partition_path(settings.offline_dir, view, day).exists() for view in FEATURE_VIEWS)

