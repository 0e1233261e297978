"""Lineage of a model version: its chain of parents back to the last full train, with evidence.

``describe_lineage`` joins two sources. The registry stores, for each version in the
chain, its kind, parent, rebase trigger, training partitions with their data versions,
gate decision and holdout metrics. The per-day records under ``reports/`` add the
validation of each training partition, the prequential metrics while the version was
champion, and the report paths. ``freshrank lineage`` prints the result, and the
``deployment`` asset shows ``lineage_markdown`` of the champion in Dagster.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from freshrank.config import Settings
from freshrank.records import record_path
from models.policy import PREQUENTIAL_STAGE, registry_for

logger = logging.getLogger(__name__)


def validation_outcome(settings: Settings, day: str) -> dict:
    """Return a day's stored validation outcome: passed, failed checks, release and report path.

    ``passed`` is None when the day has no validation report (a home built without the
    Dagster check or ``freshrank ingest``).
    """
    path = settings.reports_dir / "validation" / day / "validation.json"
    if not path.exists():
        return {"passed": None, "failed_checks": None, "released": None, "report": None}
    report = json.loads(path.read_text())
    failed = [outcome.get("expectation") for outcome in report.get("outcomes", []) if not outcome.get("success")]
    return {
        "passed": bool(report.get("success")),
        "failed_checks": failed,
        "released": report.get("release") is not None,
        "report": str(path),
    }


def describe_lineage(settings: Settings, version: str) -> list[dict]:
    """Describe ``version`` and its parents back to the nearest full train.

    Args:
        settings: Settings of the home.
        version: A registered version.

    Returns:
        One record per version, ``version`` first and the full train last. Each has
        ``version``, ``day``, ``kind``, ``parent``, ``tree_count``, ``trees_added``,
        ``model_bytes`` and:

        * ``rebase``: trigger, reason and evidence of a full train; None for a continued round;
        * ``training_partitions``: day, data version and validation outcome of each;
        * ``checks``: the gate decision with every check;
        * ``metrics``: holdout, champion holdout, and the prequential days as champion;
        * ``reports``: paths of the day's records and reports;
        * ``deployed``: whether the version was ever champion.

    Raises:
        ModelRegistryError: The version is unknown or its chain of parents is broken.
    """
    registry = registry_for(settings)
    deployed = {event["version"] for event in registry.history() if event.get("kind") == "deploy"}
    prequential = _prequential_by_champion(settings)
    return [_describe(settings, record, record["version"] in deployed, prequential) for record in registry.lineage(version)]


def _describe(settings: Settings, record: dict, deployed: bool, prequential: dict[str, list[dict]]) -> dict:
    extra = record.get("extra") or {}
    lineage = record.get("lineage") or {}
    partitions = lineage.get("training_partitions") or [
        {**partition, "validation": validation_outcome(settings, partition["day"])}
        for partition in record["training_partitions"]
    ]
    as_champion = prequential.get(record["version"], [])
    metrics = record.get("metrics") or {}
    return {
        "version": record["version"],
        "day": record["day"],
        "kind": record["kind"],
        "parent": record["parent"],
        "tree_count": record["tree_count"],
        "trees_added": extra.get("trees_added"),
        "model_bytes": extra.get("model_bytes"),
        "rebase": extra.get("rebase"),
        "training_partitions": [_partition(settings, partition) for partition in partitions],
        "checks": {"gate": record.get("gate"), "increment_valid": (lineage.get("checks") or {}).get("increment_valid")},
        "metrics": {
            "holdout": metrics.get("holdout"),
            "champion_holdout": metrics.get("champion_holdout"),
            "prequential_as_champion": as_champion,
        },
        "reports": lineage.get("reports") or _report_paths(settings, record["day"]),
        "deployed": deployed,
    }


def _partition(settings: Settings, partition: dict) -> dict:
    validation = partition.get("validation") or validation_outcome(settings, partition["day"])
    return {"day": partition["day"], "data_version": partition.get("data_version"), "validation": validation}


def _report_paths(settings: Settings, day: str) -> dict:
    """Return the standard per-day record paths of a version that has no deployment lineage."""
    from datetime import date

    the_day = date.fromisoformat(day)
    paths: dict[str, str | None] = {}
    for stage in (PREQUENTIAL_STAGE, "challenger_model", "shadow_full_retrain", "deployment"):
        path = record_path(settings, stage, the_day)
        paths[stage] = str(path) if path.exists() else None
    drift_html = settings.reports_dir / "drift" / f"{day}.html"
    paths["drift_html"] = str(drift_html) if drift_html.exists() else None
    return paths


def _prequential_by_champion(settings: Settings) -> dict[str, list[dict]]:
    """Return, per champion version, the days it was scored on before training and its metrics there."""
    folder = settings.reports_dir / PREQUENTIAL_STAGE
    found: dict[str, list[dict]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        champion, metrics = record.get("champion"), record.get("champion_metrics") or {}
        if champion is None or not metrics:
            continue
        found.setdefault(champion, []).append(
            {"day": path.stem, "auc": metrics.get("auc"), "ndcg_at_10": metrics.get("ndcg_at_10"), "rows": metrics.get("rows")}
        )
    return found


def lineage_markdown(chain: list[dict]) -> str:
    """Render a described chain as a Markdown table, newest version first."""
    lines = [
        "| version | kind | trees | rebase | training partitions | gate | holdout NDCG@10 | prequential NDCG@10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in chain:
        lines.append(
            "| "
            + " | ".join(
                [
                    record["version"],
                    record["kind"],
                    str(record["tree_count"]),
                    rebase_text(record),
                    partitions_text(record),
                    gate_text(record),
                    _number((record["metrics"]["holdout"] or {}).get("ndcg_at_10")),
                    _number(mean_prequential(record, "ndcg_at_10")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def rebase_text(record: dict) -> str:
    """Return the rebase trigger and reason of a full train, or ``-`` for a continued round."""
    rebase = record.get("rebase")
    if not rebase:
        return "-" if record["kind"] != "full" else "full train (no rebase record)"
    return f"{rebase['trigger']}: {rebase['reason']}"


def partitions_text(record: dict) -> str:
    """Return the training partitions as ``day`` (or ``first .. last (n days)`` for a window)."""
    days = [partition["day"] for partition in record["training_partitions"]]
    if len(days) <= 2:
        return ", ".join(days)
    return f"{days[0]} .. {days[-1]} ({len(days)} days)"


def gate_text(record: dict) -> str:
    """Return ``deployed``, ``rejected: reasons`` or ``not gated``."""
    decision = record["checks"].get("gate")
    if decision is None:
        return "not gated"
    if decision.get("deploy"):
        return "deployed" if record.get("deployed") else "passed"
    return "rejected: " + "; ".join(decision.get("reasons") or [])


def mean_prequential(record: dict, metric: str) -> float | None:
    """Return the mean of a metric over the days the version was scored as champion."""
    values = [day[metric] for day in record["metrics"]["prequential_as_champion"] if day.get(metric) is not None]
    return sum(values) / len(values) if values else None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def short_path(path: str | None, home: Path) -> str:
    """Return a report path relative to the home when it lies under it, ``-`` when missing."""
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(home))
    except ValueError:
        return path
