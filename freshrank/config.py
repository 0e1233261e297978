"""freshrank settings: one home folder and the policies of each pipeline stage.

Settings are read from ``<home>/freshrank.yaml`` when it exists; every field has a
default, and unknown keys are rejected so that a typo never goes unnoticed.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from freshrank.errors import ConfigError

CONFIG_FILE_NAME = "freshrank.yaml"
HOME_ENV_VAR = "FRESHRANK_HOME"
DEFAULT_HOME = "freshrank_home"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureConfig(_Strict):
    """Trailing windows of the user, item and user x item features."""

    windows_days: tuple[int, ...] = (1, 7, 28)
    """Window lengths in days for counts and rates; the longest also bounds recency."""
    user_item_window_days: int = 90
    """Window in days of the user x item and user x category history (repeat purchases)."""

    @property
    def max_window_days(self) -> int:
        """Number of trailing days a feature partition reads, the day itself included."""
        return max(max(self.windows_days), self.user_item_window_days)


class ValidationConfig(_Strict):
    """Thresholds of the increment validation suite."""

    max_duplicate_share: float = 0.1
    """Largest share of exact duplicate rows in an increment, as a fraction of its rows."""
    volume_trailing_days: int = 7
    """Number of earlier published days whose mean row count is the volume reference."""
    min_volume_ratio: float = 0.2
    """Smallest accepted ratio of the increment's rows to the trailing mean."""
    max_volume_ratio: float = 5.0
    """Largest accepted ratio of the increment's rows to the trailing mean."""
    max_id_length: int = Field(default=256, ge=1)
    """Longest accepted ``user_id``, ``item_id`` or ``session_id``, in characters."""
    max_clock_skew_seconds: float = Field(default=300.0, ge=0)
    """Seconds an ``event_time`` may lie after the wall-clock time of the validation run."""
    max_abs_quantity: float = Field(default=100_000.0, gt=0)
    """Largest accepted absolute ``quantity`` of one event, in units."""
    max_price: float = Field(default=1_000_000.0, gt=0)
    """Largest accepted unit ``price``, in the shop's currency units."""
    max_top_user_share: float = Field(default=0.5, gt=0, le=1)
    """Largest fraction of a day's rows that one ``user_id`` may have; more looks like a bot."""
    min_rows_for_user_share: int = Field(default=300, ge=1)
    """Row count from which the top-user share is checked; in a smaller day one customer may
    legitimately make most of the events."""


class TrainingConfig(_Strict):
    """XGBoost training and continued-boosting policy."""

    trees_per_day: int = 3
    """Trees appended to the champion by one continued-boosting round."""
    full_train_trees: int = 200
    """Trees of a full train (the first day, or a rebase)."""
    learning_rate: float = 0.1
    """Learning rate (eta) of full trains."""
    continued_learning_rate: float = 0.02
    """Learning rate (eta) of continued-boosting rounds."""
    max_depth: int = 6
    """Maximum tree depth."""
    full_train_window_days: int = 60
    """Trailing stored days of training rows used by a full train (first model, rebase, shadow)."""
    max_training_rows: int = Field(default=2_000_000, ge=1)
    """Row budget of one training run, which bounds its memory. When the window's earlier
    days hold more rows than the budget leaves after the new day's, whole query groups
    (a user's rows of one day) of those days are kept with a seeded hash, in the share that
    fits. The new day is never sampled."""
    max_trees: int = 1000
    """Tree budget: when the champion's trees plus ``trees_per_day`` would pass it, the next
    challenger is a full train (a rebase with trigger ``tree_budget``)."""
    continued_window_days: int = Field(default=14, ge=1)
    """Trailing stored days of training rows, the new day included, that a continued round
    trains on; 1 trains on the new day only."""
    rebase_every_days: int = Field(default=0, ge=0)
    """Days after the champion's last full train at which the next challenger is a full train
    (a rebase with trigger ``schedule``); 0 turns the schedule off."""
    shadow_every_days: int = Field(default=7, ge=0)
    """Days between shadow full retrains, counted from the later of the last shadow and the
    champion's last full train; 0 turns the shadow off (and with it the degradation trigger)."""
    rebase_margin: float = Field(default=0.005, ge=0.0)
    """Rebase (trigger ``degradation``) when the latest shadow's prequential ``gate.metric`` is
    above the champion's by more than this, in absolute units of the metric, averaged over
    ``shadow_comparison_days`` days."""
    shadow_comparison_days: int = Field(default=1, ge=1)
    """Prequential days, newest first, over which the shadow's lead over the champion is
    averaged; the degradation trigger waits until this many days were compared."""
    rebase_from_shadow: bool = True
    """On a ``degradation`` rebase, register the leading shadow as the new full train and
    continue it on the trailing ``continued_window_days``. This saves the full train that a
    rebase would otherwise run."""
    store_margins: bool = True
    """Keep the parent's margins on each day's training rows (``<home>/margins``), so that a
    continued round evaluates only the trees added since, not the whole parent."""
    join_chunk_rows: int = Field(default=500_000, ge=1)
    """A day's training rows are joined with their point-in-time features in chunks of
    whole users of at most this many rows, which bounds the join's memory."""
    negatives_per_positive: int = 10
    """Popularity-sampled negatives per purchased item, for purchase-only data."""
    holdout_share: float = 0.2
    """Share of a day's users held out from training to compare challenger and champion."""
    seed: int = 7
    """Seed of negative sampling, the holdout split and XGBoost."""
    nthread: int = 2
    """XGBoost threads used in training."""


class GateConfig(_Strict):
    """When a challenger may replace the champion."""

    metric: str = "ndcg_at_10"
    """Holdout metric compared between challenger and champion (higher is better)."""
    tolerance: float = 0.01
    """Largest accepted drop of the metric, in absolute units of the metric."""
    metric_confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """One-sided confidence with which the challenger must be shown to fall more than
    ``tolerance`` below the champion before the metric check rejects it. The drop is the
    mean over the holdout's query groups of the paired per-group difference (for
    ``ndcg_at_10`` and ``recall_at_10``); 0.5 compares the plain means."""
    block_on_drift: bool = False
    """Refuse deployment when the drift share is over the drift threshold."""
    operating_threshold: float = 0.5
    """Score above which an item counts as predicted positive for precision and recall."""
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Size budget of a challenger's saved model (XGBoost UBJSON), in bytes; a larger one is
    refused. The tree budget ``training.max_trees`` is checked by the gate as well."""


class DriftConfig(_Strict):
    """Evidently drift check of features and predictions."""

    reference_days: int = 7
    """Number of earlier days whose training rows form the reference window."""
    drift_share_threshold: float = 0.5
    """Share of drifted columns above which a drift alert is raised."""
    max_rows: int = 5000
    """Rows sampled from each of reference and current data to bound the check's cost."""


class OnlineStoreConfig(_Strict):
    """Feast online store choice."""

    type: str = "sqlite"
    """``sqlite`` (a file under the home) or ``redis``."""
    connection_string: str = "127.0.0.1:6379"
    """Redis connection string, used only when ``type`` is ``redis``."""
    probe_sample: int = 50
    """Entities read back after each materialization to compare with offline values."""
    writer: str = "bulk"
    """``bulk``: freshrank's writer in Feast's layout (fast); ``feast``: ``FeatureStore.materialize``."""
    full_write_bucket_rows: int = Field(default=2_000_000, gt=0)
    """Partition rows per bucket of a full online write with the bulk writer. A bucket is
    kept in memory and written in one transaction, so smaller buckets lower the peak memory."""
    sqlite_entity_index: bool = False
    """Whether the bulk writer keeps Feast's second index on ``entity_key`` of each SQLite
    table. The primary key (entity_key, feature_name) already serves lookups by entity, so
    by default the writer empties that index. The diff write of a 2M-event day into a
    3.5 GB file then took 22% less time (docs/benchmarks.md)."""
    delete_expired: bool = True
    """Whether the bulk writer deletes an entity whose newest row is an expiry row (it left
    every window of its view) instead of writing null values. Feast reads both as nulls,
    and deleting keeps the store to the entities of the current windows. Off, the store
    keeps a row for every entity it ever held. ``writer: feast`` always writes the nulls."""

    @field_validator("writer")
    @classmethod
    def _known_writer(cls, value: str) -> str:
        if value not in ("bulk", "feast"):
            raise ValueError(f"online_store.writer must be 'bulk' or 'feast', not {value!r}")
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ("sqlite", "redis"):
            raise ValueError(f"online_store.type must be 'sqlite' or 'redis', not {value!r}")
        return value


class OrchestrationConfig(_Strict):
    """When Dagster looks for new or changed increments."""

    sensor_interval_seconds: int = 30
    """Minimum seconds between two evaluations of the landing-folder sensor."""
    schedule_cron: str = "0 6 * * *"
    """Cron expression, in the business timezone, of the daily run that works without the sensor."""
    max_concurrent_runs: int = 1
    """Runs the Dagster instance under the home executes at once; 1 keeps partitions in date order."""
    concurrent_branches: bool = True
    """Whether in-process runs (``freshrank run``, ``watch``, ``demo``) split a day into an ingest run,
    two concurrent runs (online write, model branch) and a deploy run. False runs one run per day."""
    concurrent_branches_max_events: int = Field(default=1_000_000, ge=0)
    """A day with more published events than this runs its two branches one after the
    other, so that their memory does not add up in the process (see docs/scale.md)."""


class ABConfig(_Strict):
    """A/B split: a stable share of users is ranked by a second model version."""

    treatment_version: str | None = None
    """Registry version that ranks the treatment users; unset means no split (everyone gets the champion)."""
    treatment_share: float = 0.0
    """Fraction of users, in [0, 1], routed to ``treatment_version`` by a hash of their user id."""
    salt: str = "freshrank-ab-1"
    """Text mixed into the user id hash; a new salt reshuffles which users are in the treatment."""

    @field_validator("treatment_share")
    @classmethod
    def _share_is_fraction(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"serving.ab.treatment_share must be a fraction in [0, 1], not {value}")
        return value


class RecommendConfig(_Strict):
    """Candidate source of ``GET /recommend``, rebuilt from the warehouse on each deployment."""

    top_categories: int = Field(default=3, ge=0)
    """Number of the user's most frequent categories whose popular items become candidates."""
    items_per_category: int = Field(default=50, ge=0)
    """Most popular items taken from each of the user's top categories."""
    popular_items: int = Field(default=100, ge=0)
    """Most popular items overall, added to every user's candidates."""
    popularity_window_days: int = Field(default=28, ge=1)
    """Trailing event days, up to the newest published day, over which popularity is counted."""


class ServingConfig(_Strict):
    """HTTP ranking service (`freshrank serve`): limits, refresh policy, A/B split and request log."""

    host: str = "127.0.0.1"
    """Interface the service binds to; the default accepts local connections only."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port of the service."""
    workers: int = Field(default=1, ge=1)
    """uvicorn worker processes; each holds its own model, item-feature snapshot and metrics."""
    max_candidates: int = Field(default=1000, ge=1)
    """Largest number of candidate item ids accepted by one ``POST /rank`` request."""
    max_id_length: int = Field(default=128, ge=1)
    """Largest length, in characters, of a user id or item id in a request."""
    max_query_length: int = Field(default=200, ge=1)
    """Largest length, in characters, of the ``q`` parameter of ``GET /search``."""
    max_k: int = Field(default=100, ge=1)
    """Largest number of items returned by ``GET /recommend`` and ``GET /search``."""
    default_k: int = Field(default=10, ge=1)
    """Items returned by ``GET /recommend`` and ``GET /search`` when the request sets no ``k``."""
    item_features: str = "snapshot"
    """``snapshot``: hold all item features in memory and re-read them after each materialization;
    ``online``: read the candidates' item features from the online store on every request."""
    reload_interval_s: float = Field(default=1.0, gt=0)
    """Seconds between checks of the champion pointer and of new materialization records."""
    snapshot_max_age_s: float = Field(default=900.0, ge=0)
    """Seconds after which the item-feature snapshot is re-read even without a new
    materialization record (this covers `freshrank features materialize`); 0 turns it off."""
    request_log: str = "serving/requests.jsonl"
    """Request log (JSON Lines), relative to the home; an empty string turns the log off."""
    request_log_items: int = Field(default=100, ge=1)
    """Ranked item ids written to the request log per request, from the top."""
    catalogue: str = "serving/catalogue.parquet"
    """Optional item titles for ``GET /search`` (Parquet or CSV with ``item_id``, ``title`` and
    optionally ``category``), relative to the home; `freshrank catalogue` writes it."""
    recommend: RecommendConfig = RecommendConfig()
    """Candidate source of ``GET /recommend``."""
    ab: ABConfig = ABConfig()
    """A/B split between the champion and a second model version."""

    @field_validator("item_features")
    @classmethod
    def _known_item_source(cls, value: str) -> str:
        if value not in ("snapshot", "online"):
            raise ValueError(f"serving.item_features must be 'snapshot' or 'online', not {value!r}")
        return value

    @field_validator("request_log", "catalogue")
    @classmethod
    def _inside_home(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"{value!r} must be a path relative to the home without '..', so that nothing is written outside it"
            )
        return value


class AlertsConfig(_Strict):
    """Delivery of data-quality and drift alerts besides ``<home>/alerts.jsonl``."""

    webhook_url: str | None = None
    """URL that receives each alert as a JSON POST with a Slack-compatible ``text`` field; unset
    disables it. The environment variable ``FRESHRANK_ALERT_WEBHOOK_URL`` overrides it, so that
    a secret URL need not be written into freshrank.yaml."""
    webhook_include_alert: bool = False
    """Also send the whole alert record as the field ``alert`` next to ``text``."""
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    """Seconds to wait for the connection and for each read of the response of one POST."""
    webhook_retries: int = Field(default=3, ge=0)
    """POSTs repeated after a failed one (connection error, timeout, HTTP 429 or 5xx)."""
    webhook_backoff_seconds: float = Field(default=1.0, ge=0)
    """Seconds to wait before the first retry; the wait doubles before each further retry."""

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("alerts.webhook_url must start with http:// or https://")
        return value


class Settings(_Strict):
    """All freshrank settings; ``home`` is the one folder freshrank writes to."""

    home: Path = Field(default_factory=lambda: Path(DEFAULT_HOME))
    """Root folder of the warehouse, landing zone, Feast repo state, models and reports."""
    timezone: str = "UTC"
    """Business timezone (IANA name) whose calendar days are the partitions."""
    start_day: date | None = None
    """First daily partition; unset means the oldest day in the landing folder."""
    duckdb_memory_limit: str = "2GB"
    """Memory limit of each DuckDB connection that computes features, joins training rows
    or compares partitions, in DuckDB's notation (``"2GB"``, ``"512MB"``). Beyond it DuckDB
    spills to ``<home>/tmp/duckdb``."""
    features: FeatureConfig = FeatureConfig()
    validation: ValidationConfig = ValidationConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    drift: DriftConfig = DriftConfig()
    online_store: OnlineStoreConfig = OnlineStoreConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    serving: ServingConfig = ServingConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as 'Europe/London'") from exc
        return value

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _duckdb_size(cls, value: str) -> str:
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", value):
            raise ValueError(f"duckdb_memory_limit {value!r} is not a size; write it as DuckDB does, such as '2GB' or '512MB'")
        return value.strip()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # Paths under the home, in one place so that nothing is written elsewhere.
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def duckdb_memory(self):
        """The DuckDB memory bound of this home (``freshrank.warehouse.MemoryBound``)."""
        from freshrank.warehouse import MemoryBound

        return MemoryBound(self.duckdb_memory_limit, self.home / "tmp" / "duckdb")

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the home folder: the argument, else ``$FRESHRANK_HOME``, else ``./freshrank_home``."""
    if home is not None:
        return Path(home).absolute()
    return Path(os.environ.get(HOME_ENV_VAR, DEFAULT_HOME)).absolute()


def load_settings(home: str | os.PathLike[str] | None = None) -> Settings:
    """Load the settings of a home folder; a missing config file means all defaults."""
    root = resolve_home(home)
    path = root / CONFIG_FILE_NAME
    raw: dict = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    raw.pop("home", None)
    try:
        return Settings(home=root, **raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def save_settings(settings: Settings) -> Path:
    """Write the settings that differ from the defaults to ``<home>/freshrank.yaml``."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / CONFIG_FILE_NAME
    data = settings.model_dump(mode="json", exclude_defaults=True, exclude={"home"})
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    os.replace(tmp, path)
    return path
