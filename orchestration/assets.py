"""The daily loop as Dagster software-defined assets, one partition per event day.

increment -> (blocking check) -> events -> user/item/user_item features -> online_features
events + features of the day before -> training_rows -> prequential_evaluation
training_rows + challenger of the day before -> challenger_model -> prediction_drift -> deployment
"""


import contextlib
import io
import logging
from datetime import date

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from freshrank.config import Settings
from freshrank.feature_store import model_feature_names, open_store, probe_online, write_online
from freshrank.features import FEATURE_VIEWS, write_feature_partition
from freshrank.quality import validate_staged
from freshrank.records import read_record, write_record
from freshrank.staging import load_staged, stage_increment
from freshrank.training_rows import (
    sample_stored_rows,
    stored_row_batches,
    stored_row_count,
    stored_training_days,
    training_row_chunks,
    write_training_row_chunks,
)
from freshrank.warehouse import publish_increment
from models import lifecycle, shadow
from models.lineage import describe_lineage, lineage_markdown
from models.training import predict
from orchestration.metadata import clean_metadata
from orchestration.partitions import daily_partitions, previous_day, trailing_window
from orchestration.report_assets import validation_check_metadata
from orchestration.resources import FreshrankHome

logger = logging.getLogger(__name__)


def _day(context) -> date:
    return date.fromisoformat(context.partition_key)


def build_assets(settings: Settings) -> tuple[list[AssetsDefinition], list]:
    """Build the assets and asset checks of the daily loop for a home's partitions and windows."""
    partitions = daily_partitions(settings)
    window = settings.features.max_window_days

    @asset(partitions_def=partitions, group_name="ingestion", kinds={"parquet"})
    def increment(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The day's delivered landing files (``landing/YYYY-MM-DD/``), typed into the canonical schema and
        staged in ``staging/YYYY-MM-DD.parquet`` for validation. Its data version is a hash of the files' bytes."""
        staged = stage_increment(freshrank.settings(), _day(context))
        return MaterializeResult(
            metadata={
                "rows": staged.rows,
                "files": MetadataValue.json(list(staged.files)),
                "data_version": staged.data_version,
                "staged_path": MetadataValue.path(str(staged.path)),
            },
            data_version=DataVersion(staged.data_version),
        )

    @asset_check(asset=increment, blocking=True, partitions_def=partitions)
    def check_increment_valid(context, freshrank: FreshrankHome) -> AssetCheckResult:
        """The staged increment passes the Great Expectations suite: required columns, keys, event types,
        timestamps inside the day, price, quantity, duplicate share and row volume. Blocking: a failure
        quarantines the files and skips everything downstream of the day. The metadata lists each
        expectation's observed value and threshold."""
        outcome = validate_staged(freshrank.settings(), date.fromisoformat(context.partition_key))
        failed = outcome.result.failed()
        metadata = {
            "data_version": outcome.data_version,
            "rows": outcome.result.row_count,
            "failed_expectations": len(failed),
            "summary": MetadataValue.md(outcome.result.to_markdown()),
            "report": MetadataValue.path(str(outcome.report_paths["json"])),
            **validation_check_metadata(outcome.result),
        }
        if outcome.quarantine is not None:
            metadata["quarantine"] = MetadataValue.path(str(outcome.quarantine))
        return AssetCheckResult(
            passed=outcome.result.success, severity=AssetCheckSeverity.ERROR, metadata=metadata
        )

    @asset(partitions_def=partitions, deps=[increment], group_name="ingestion", kinds={"duckdb"})
    def events(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The day's validated events in the DuckDB warehouse (table events), with exact duplicates
        dropped and returns set aside; published only after the validation check passed."""
        settings = freshrank.settings()
        day = _day(context)
        report = publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
        write_record(settings, "events", day, report.to_dict())
        return MaterializeResult(metadata=clean_metadata(report.to_dict()), data_version=DataVersion(report.data_version))

    feature_assets = [_feature_asset(view, partitions, window) for view in FEATURE_VIEWS]

    @asset(partitions_def=partitions, deps=feature_assets, group_name="features", kinds={"feast", "sqlite"})
    def online_features(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The day's user, item and user x item feature rows in the Feast online store, checked by
        reading a sample of entities back and comparing it with the Parquet partitions. Only the
        rows that changed since the day before are written when that is exact (write_mode diff)."""
        settings = freshrank.settings()
        day = _day(context)
        store = open_store(settings)
        with contextlib.redirect_stdout(io.StringIO()) as feast_output:
            write = write_online(settings, day, store)
        logger.debug("feast materialize output: %s", feast_output.getvalue())
        probe = probe_online(settings, day, store)
        record = {
            "window_start": write.start.isoformat(),
            "window_end": write.end.isoformat(),
            "write_mode": write.mode,
            "write_reason": write.reason,
            "rows_written": write.total_rows,
            **{f"rows_written_{view}": rows for view, rows in write.rows.items()},
            "rows_deleted": sum(write.deleted.values()),
            # The bulk writer counts the (entity, feature) values it writes; Feast's materialize does not.
            "values_written": sum(write.values.values()) if write.values else None,
            "entities_pruned": sum(write.pruned.values()) if write.pruned else None,
            "write_seconds": round(write.seconds, 3),
            "probe_entities": probe.entities,
            "probe_values": probe.values,
            "probe_mismatches": len(probe.mismatches),
            "probe_matched": probe.matched,
        }
        write_record(settings, "online_features", day, {**record, "mismatches": probe.mismatches})
        metadata = clean_metadata(record)
        if probe.mismatches:
            metadata["mismatch_examples"] = MetadataValue.json(probe.mismatches[:10])
        return MaterializeResult(metadata=metadata)

    @asset(
        partitions_def=partitions,
        deps=[events] + [AssetDep(view, partition_mapping=previous_day()) for view in feature_assets],
        group_name="model",
        kinds={"feast", "parquet"},
    )
    def training_rows(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """Labelled candidates of the day with point-in-time features as of the day before."""
        settings = freshrank.settings()
        day = _day(context)
        chunks, mode = training_row_chunks(settings, day)
        stored = write_training_row_chunks(settings, day, chunks)
        record = {
            "rows": stored.rows,
            "positives": stored.positives,
            "users": stored.users,
            "labelling": mode,
            "path": str(stored.path),
        }
        write_record(settings, "training_rows", day, record)
        return MaterializeResult(metadata=clean_metadata(record))

    # The prequential evaluation also scores the newest shadow of an earlier day, read from the
    # shadow store. That edge is not declared: Dagster allows no cycle between assets except a
    # self-dependency, and shadow -> challenger -> prequential -> shadow would be one. Runs of
    # one home execute one at a time in partition order, so the earlier day's shadow is stored.
    @asset(partitions_def=partitions, deps=[training_rows], group_name="model", kinds={"xgboost"})
    def prequential_evaluation(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The champion's, the previous challenger's and the shadow's metrics on the day, before training on it."""
        settings = freshrank.settings()
        day = _day(context)
        record = lifecycle.prequential_evaluation(settings, day)
        write_record(settings, "prequential_evaluation", day, record)
        return MaterializeResult(metadata=_prequential_metadata(record))

    @asset(
        partitions_def=partitions,
        deps=[training_rows, prequential_evaluation, AssetDep("challenger_model", partition_mapping=previous_day())],
        group_name="model",
        kinds={"xgboost"},
    )
    def challenger_model(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The day's challenger: the champion plus new trees on the trailing days, or a full train (rebase)."""
        settings = freshrank.settings()
        day = _day(context)
        result = lifecycle.train_challenger(settings, day)
        write_record(settings, "challenger_model", day, result.to_dict())
        return MaterializeResult(metadata=_challenger_metadata(result))

    @asset(
        partitions_def=partitions,
        deps=[training_rows, challenger_model, "deployment"],
        group_name="model",
        kinds={"xgboost"},
    )
    def shadow_full_retrain(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """A full retrain on the trailing window, on the policy's schedule, scored next to the champion; never deployed.

        Runs after the deployment, so the day's model is served without waiting for it; the
        deployed version's lineage gets the shadow's holdout metrics afterwards."""
        from orchestration.deploy import record_shadow_in_lineage

        settings = freshrank.settings()
        day = _day(context)
        result = shadow.shadow_full_retrain(settings, day)
        write_record(settings, shadow.SHADOW_STAGE, day, result.to_dict())
        record_shadow_in_lineage(settings, day)
        return MaterializeResult(metadata=_shadow_metadata(result))

    # Drift gates the deployment only with gate.block_on_drift. Otherwise it is monitoring,
    # and runs after the deployment so the day's model is served without waiting for it.
    drift_blocks = settings.gate.block_on_drift

    @asset(
        partitions_def=partitions,
        deps=[challenger_model] if drift_blocks else [challenger_model, "deployment"],
        group_name="model",
        kinds={"evidently"},
    )
    def prediction_drift(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """Evidently drift of the day's features and predictions against the reference window."""
        from orchestration.deploy import record_drift_in_lineage

        settings = freshrank.settings()
        day = _day(context)
        record = _drift_record(settings, day)
        write_record(settings, "prediction_drift", day, record)
        if not settings.gate.block_on_drift:
            record_drift_in_lineage(settings, day)
        metadata = clean_metadata({k: v for k, v in record.items() if k not in ("columns", "drifted_columns")})
        metadata["drifted_columns"] = MetadataValue.json(record.get("drifted_columns", []))
        if record.get("html_path"):
            metadata["report"] = MetadataValue.path(record["html_path"])
        return MaterializeResult(metadata=metadata)

    @asset(
        partitions_def=partitions,
        deps=[challenger_model, prequential_evaluation, online_features] + ([prediction_drift] if drift_blocks else []),
        group_name="deployment",
        kinds={"xgboost"},
    )
    def deployment(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """The gate's decision for the day's challenger and the champion serving afterwards."""
        from orchestration.deploy import deploy_day

        settings = freshrank.settings()
        record = deploy_day(settings, _day(context))
        return MaterializeResult(metadata=_deployment_metadata(settings, record))

    assets = [
        increment,
        events,
        *feature_assets,
        online_features,
        training_rows,
        prequential_evaluation,
        challenger_model,
        shadow_full_retrain,
        prediction_drift,
        deployment,
    ]
    return assets, [check_increment_valid]


def _feature_asset(view: str, partitions, window: int) -> AssetsDefinition:
    descriptions = {
        "user_features": "Per-user activity over trailing windows, one Parquet file per day for Feast.",
        "item_features": "Per-item popularity over trailing windows, one Parquet file per day for Feast.",
        "user_item_features": "Per user x item history, one Parquet file per day for Feast.",
        "user_category_features": "Per user x category history, one Parquet file per day for Feast.",
    }

    @asset(
        name=view,
        partitions_def=partitions,
        deps=[AssetDep("events", partition_mapping=trailing_window(window))],
        group_name="features",
        kinds={"duckdb", "parquet"},
        description=descriptions[view],
    )
    def feature_partition(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        settings = freshrank.settings()
        day = _day(context)
        written = write_feature_partition(
            settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone, settings.duckdb_memory
        )
        return MaterializeResult(metadata={"rows": written.rows, "path": MetadataValue.path(str(written.path))})

    return feature_partition


def _drift_record(settings: Settings, day: date) -> dict:
    from freshrank.drift import check_drift

    challenger = read_record(settings, "challenger_model", day) or {}
    registry = lifecycle.registry_for(settings)
    version = challenger.get("version") or registry.champion()
    reference_days = stored_training_days(settings, day, settings.drift.reference_days)
    if version is None or not stored_row_count(settings, reference_days) or not stored_row_count(settings, [day]):
        return {"skipped_reason": "no model or no reference window yet", "drift_share": None, "alert": False}
    columns = model_feature_names(settings)
    booster = registry.load(version)
    # Only the compared rows are read and scored, the same rows check_drift would draw
    # from the whole frames. The day's prediction statistics score its rows in batches.
    seed, max_rows = settings.training.seed, settings.drift.max_rows
    predictions = np.concatenate(
        [predict(booster, batch, columns) for batch in stored_row_batches(settings, day, columns)]
    )
    current = sample_stored_rows(settings, [day], max_rows, seed, columns)
    current = current.assign(prediction=predictions[current.index.to_numpy()])
    reference = sample_stored_rows(settings, reference_days, max_rows, seed, columns)
    reference = reference.assign(prediction=predict(booster, reference, columns))
    html_path = settings.reports_dir / "drift" / f"{day.isoformat()}.html"
    result = check_drift(reference, current, columns + ["prediction"], settings.drift, html_path, seed=settings.training.seed)
    record = {
        "model_version": version,
        "reference_days": [d.isoformat() for d in reference_days],
        "drift_share": result.drift_share,
        "drifted_columns": result.drifted_columns,
        "columns": result.columns,
        "alert": result.alert,
        "threshold": result.threshold,
        "html_path": str(result.html_path) if result.html_path else None,
        "prediction_mean": float(np.mean(predictions)),
        "prediction_std": float(np.std(predictions)),
    }
    if result.alert:
        from freshrank.alerts import drift_alert_key, raise_alert

        raise_alert(
            settings,
            "drift",
            day.isoformat(),
            f"drift share {result.drift_share:.2f} over threshold {result.threshold} on {day}",
            {"drifted_columns": result.drifted_columns, "report": record["html_path"]},
            key=drift_alert_key(day.isoformat(), version),
        )
    return record


def _flat_metrics(metadata: dict, prefix: str, values: dict | None) -> None:
    for name, value in (values or {}).items():
        metadata[f"{prefix}_{name}"] = value


def _prequential_metadata(record: dict) -> dict:
    metadata = {"champion": record["champion"] or "none", "rows": record["rows"]}
    _flat_metrics(metadata, "champion", record.get("champion_metrics"))
    _flat_metrics(metadata, "previous_challenger", record.get("previous_challenger_metrics"))
    shadow_record = record.get("shadow")
    if shadow_record:
        metadata["shadow_day"] = shadow_record["day"]
        metadata["shadow_lead"] = shadow_record["lead"]
        _flat_metrics(metadata, "shadow", shadow_record["metrics"])
    return clean_metadata(metadata)


def _challenger_metadata(result: lifecycle.ChallengerResult) -> dict:
    rebase = result.rebase or {}
    metadata = {
        "version": result.version or "none",
        "kind": result.kind,
        "parent": result.parent or "none",
        "rebase_trigger": rebase.get("trigger"),
        "rebase_reason": rebase.get("reason"),
        "tree_count": result.trees,
        "trees_added": result.trees_added,
        "model_bytes": result.model_bytes,
        "train_seconds": result.train_seconds,
        "training_rows": result.training_rows,
        "holdout_rows": result.holdout_rows,
        "training_days": result.training_days,
        "skipped_reason": result.skipped_reason,
    }
    if result.base_margins is not None:
        metadata["margin_rows_stored"] = result.base_margins["stored_rows"]
        metadata["margin_rows_predicted"] = result.base_margins["predicted_rows"]
        metadata["margin_trees_appended"] = result.base_margins["appended_trees"]
    _flat_metrics(metadata, "holdout", result.challenger_holdout)
    _flat_metrics(metadata, "champion_holdout", result.champion_holdout)
    return clean_metadata(metadata)


def _shadow_metadata(result: shadow.ShadowResult) -> dict:
    metadata = {
        "due": result.due,
        "reason": result.reason,
        "champion": result.champion,
        "challenger": result.challenger,
        "metric": result.metric,
        "skipped_reason": result.skipped_reason,
    }
    if result.due and result.skipped_reason is None:
        metadata.update(
            tree_count=result.trees,
            model_bytes=result.model_bytes,
            train_seconds=result.train_seconds,
            training_rows=result.training_rows,
            holdout_rows=result.holdout_rows,
            training_days=result.training_days,
            lead_over_champion=result.lead_over_champion,
            lead_over_challenger=result.lead_over_challenger,
        )
        _flat_metrics(metadata, "shadow_holdout", result.shadow_holdout)
        _flat_metrics(metadata, "champion_holdout", result.champion_holdout)
        _flat_metrics(metadata, "challenger_holdout", result.challenger_holdout)
    metadata = clean_metadata(metadata)
    if result.model_path:
        metadata["model"] = MetadataValue.path(result.model_path)
    return metadata


def _deployment_metadata(settings: Settings, record: dict) -> dict:
    metadata = clean_metadata({k: v for k, v in record.items() if k not in ("reasons", "checks")})
    metadata["reasons"] = MetadataValue.json(record["reasons"])
    metadata["checks"] = MetadataValue.json(record.get("checks", []))
    if record.get("champion"):
        chain = describe_lineage(settings, record["champion"])
        metadata["champion_lineage"] = MetadataValue.md(lineage_markdown(chain))
    return metadata
