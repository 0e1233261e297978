"""The deployment step: gate the day's challenger and, if it passes, move the champion pointer.

Every decision is recorded three times: in ``reports/deployment/<day>.json``, in the
challenger's registry metadata (``gate``), and in the Dagster metadata of the
``deployment`` asset. A deployed challenger also gets its lineage record (``lineage``)
in the registry metadata and in the deployment event.
"""

from __future__ import annotations

import logging
from datetime import date

from freshrank.config import Settings
from freshrank.feature_store import model_feature_names
from freshrank.records import read_record, record_path, write_record
from freshrank.training_rows import read_training_rows
from models import lifecycle
from models.lineage import validation_outcome
from models.policy import partition_versions, prequential_record_path
from models.shadow import SHADOW_STAGE
from models.training import predict

logger = logging.getLogger(__name__)

CHALLENGER_STAGE = "challenger_model"
DRIFT_STAGE = "prediction_drift"
DEPLOYMENT_STAGE = "deployment"


def lineage_record(settings: Settings, day: date, challenger: dict, drift: dict, decision: dict) -> dict:
    """Build the lineage of a deployed challenger: partitions, checks, metrics and report paths.

    Args:
        settings: Settings of the home.
        day: The partition the challenger was trained for.
        challenger: The day's ``challenger_model`` record.
        drift: The day's ``prediction_drift`` record; empty when none ran, or when the check
            does not block and so runs after the deployment.
        decision: The gate decision as a dict.
    """
    partitions = partition_versions(settings, challenger.get("training_days", []))
    for partition in partitions:
        outcome = validation_outcome(settings, partition["day"])
        partition["validation_report"] = outcome["report"]
        partition["validation"] = outcome
    prequential = read_record(settings, "prequential_evaluation", day) or {}
    return {
        "day": day.isoformat(),
        "version": challenger.get("version"),
        "parent": challenger.get("parent"),
        "kind": challenger.get("kind"),
        "rebase": challenger.get("rebase"),
        "training_partitions": partitions,
        "checks": {
            "increment_valid": validation_outcome(settings, day.isoformat())["passed"],
            "gate": decision.get("checks", []),
        },
        "metrics": {
            "holdout": challenger.get("challenger_holdout"),
            "champion_holdout": challenger.get("champion_holdout"),
            "champion_prequential": prequential.get("champion_metrics"),
            "shadow_holdout": None,
            "drift_share": drift.get("drift_share"),
        },
        "reports": {
            "drift_html": drift.get("html_path"),
            "prequential_evaluation": prequential_record_path(settings, day),
            "challenger_model": str(record_path(settings, CHALLENGER_STAGE, day)),
            "shadow_full_retrain": None,
        },
    }


def record_shadow_in_lineage(settings: Settings, day: date) -> None:
    """Add the day's shadow full retrain to the lineage of the version the day deployed, if any.

    The shadow runs after the deployment (the day's model is served without waiting for
    it), so the lineage written at deployment leaves the shadow's fields empty.
    """
    shadow = read_record(settings, SHADOW_STAGE, day) or {}
    _add_to_deployed_lineage(
        settings,
        day,
        metrics={"shadow_holdout": shadow.get("shadow_holdout") if shadow.get("due") else None},
        reports={"shadow_full_retrain": str(record_path(settings, SHADOW_STAGE, day))},
    )


def record_drift_in_lineage(settings: Settings, day: date) -> None:
    """Add the day's drift share and report to the lineage of the version the day deployed, if any.

    Without ``gate.block_on_drift`` the drift check runs after the deployment, so the
    lineage written at deployment leaves its fields empty.
    """
    drift = read_record(settings, DRIFT_STAGE, day) or {}
    _add_to_deployed_lineage(
        settings, day, metrics={"drift_share": drift.get("drift_share")}, reports={"drift_html": drift.get("html_path")}
    )


def _add_to_deployed_lineage(settings: Settings, day: date, metrics: dict, reports: dict) -> None:
    deployment = read_record(settings, DEPLOYMENT_STAGE, day) or {}
    version = deployment.get("challenger")
    if not deployment.get("deploy") or version is None:
        return
    registry = lifecycle.registry_for(settings)
    lineage = dict(registry.metadata(version).get("lineage") or {})
    if not lineage:
        return
    lineage["metrics"] = {**(lineage.get("metrics") or {}), **metrics}
    lineage["reports"] = {**(lineage.get("reports") or {}), **reports}
    registry.update_metadata(version, lineage=lineage)


def deploy_day(settings: Settings, day: date) -> dict:
    """Run the gate for ``day``'s challenger, deploy it if it passes, and return the decision record."""
    registry = lifecycle.registry_for(settings)
    challenger_record = read_record(settings, CHALLENGER_STAGE, day)
    if challenger_record is None:
        challenger_record = lifecycle.ChallengerResult(
            day.isoformat(), None, None, None, skipped_reason=f"no challenger_model record for {day}"
        ).to_dict()
    # A drift record of this day that does not block was written by an earlier run: the
    # day's own check runs after this deployment and adds itself to the lineage.
    drift = (read_record(settings, DRIFT_STAGE, day) or {}) if settings.gate.block_on_drift else {}
    challenger = lifecycle.ChallengerResult(**challenger_record)

    predictions = None
    if challenger.version is not None:
        rows = read_training_rows(settings, [day])
        predictions = predict(registry.load(challenger.version), rows, model_feature_names(settings))
    validation = validation_outcome(settings, day.isoformat())
    decision = lifecycle.gate(settings, challenger, drift, predictions, validation["passed"]).to_dict()

    previous = registry.champion_for(day.isoformat())
    if decision["deploy"]:
        lineage = lineage_record(settings, day, challenger_record, drift, decision)
        registry.deploy(challenger.version, reason=_deploy_reason(day, challenger), lineage=lineage)
        registry.update_metadata(challenger.version, gate=decision, lineage=lineage)
    elif challenger.version is not None:
        registry.update_metadata(challenger.version, gate=decision)
    if not decision["deploy"]:
        logger.warning("challenger %s of %s rejected by the gate: %s", challenger.version, day, "; ".join(decision["reasons"]))

    record = {
        **decision,
        "challenger": challenger.version,
        "kind": challenger.kind,
        "rebase_trigger": (challenger.rebase or {}).get("trigger"),
        "previous_champion": previous,
        "champion": registry.champion(),
        "drift_share": drift.get("drift_share"),
    }
    write_record(settings, DEPLOYMENT_STAGE, day, record)
    logger.info("deployment decision for %s: %s", day, record)
    return record


def _deploy_reason(day: date, challenger: lifecycle.ChallengerResult) -> str:
    if challenger.rebase:
        return f"gate passed on {day}; rebase ({challenger.rebase['trigger']}): {challenger.rebase['reason']}"
    return f"gate passed on {day}"
