"""The deployment step: gate the day's challenger and, if it passes, move the champion pointer."""

from __future__ import annotations

import logging
from datetime import date

from freshrank.config import Settings
from freshrank.feature_store import model_feature_names
from freshrank.records import read_record, record_path, write_record
from freshrank.training_rows import read_training_rows
from models import lifecycle
from models.training import predict

logger = logging.getLogger(__name__)


def _lineage(settings: Settings, day: date, challenger: dict, drift: dict) -> dict:
    days = [date.fromisoformat(d) for d in challenger.get("training_days", [])]
    partitions = lifecycle.partition_versions(settings, [d.isoformat() for d in days])
    for partition in partitions:
        validation = settings.reports_dir / "validation" / partition["day"] / "validation.json"
        partition["validation_report"] = str(validation) if validation.exists() else None
    return {
        "day": day.isoformat(),
        "version": challenger.get("version"),
        "parent": challenger.get("parent"),
        "kind": challenger.get("kind"),
        "training_partitions": partitions,
        "checks": {"increment_valid": True},
        "metrics": {"holdout": challenger.get("challenger_holdout"), "champion_holdout": challenger.get("champion_holdout")},
        "reports": {
            "drift_html": drift.get("html_path"),
            "prequential_evaluation": str(record_path(settings, "prequential_evaluation", day)),
        },
    }


def deploy_day(settings: Settings, day: date) -> dict:
    """Run the gate for ``day``'s challenger, deploy it if it passes, and return the decision record."""
    registry = lifecycle.registry_for(settings)
    challenger_record = read_record(settings, "challenger_model", day) or {}
    drift = read_record(settings, "prediction_drift", day) or {}
    challenger = lifecycle.ChallengerResult(**challenger_record)
    predictions = None
    if challenger.version is not None:
        rows = read_training_rows(settings, [day])
        predictions = predict(registry.load(challenger.version), rows, model_feature_names(settings))
    decision = lifecycle.gate(settings, challenger, drift, predictions)
    previous = registry.champion()
    if decision.deploy:
        lineage = _lineage(settings, day, challenger_record, drift)
        registry.deploy(challenger.version, reason=f"gate passed on {day}", lineage=lineage)
        registry.update_metadata(challenger.version, gate=decision.to_dict(), lineage=lineage)
    elif challenger.version is not None:
        registry.update_metadata(challenger.version, gate=decision.to_dict())
    record = {
        **decision.to_dict(),
        "challenger": challenger.version,
        "previous_champion": previous,
        "champion": registry.champion(),
        "drift_share": drift.get("drift_share"),
    }
    write_record(settings, "deployment", day, record)
    logger.info("deployment decision for %s: %s", day, record)
    return record
