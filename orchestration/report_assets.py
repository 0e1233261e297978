"""The reporting side of the Dagster UI: the ``daily_report`` asset and the validation check's metadata.

``daily_report`` renders the report of the days up to its partition (``freshrank.report``) and
attaches its plots as Markdown images with PNG data URIs. The UI's Markdown renderer of
dagster-webserver 1.13 admits ``data:`` image sources (its sanitizer schema adds ``data`` to
the allowed ``src`` protocols), and a Markdown value over 1,000 characters opens from a
"[Show Markdown]" button in the metadata table. Files under the home cannot be served by the
webserver, so the Evidently report, the HTML report and the quarantine folders are given as
paths (``MetadataValue.path``), which the UI shows with a copy button.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's `context`
# annotation at definition time and rejects it as a string.
import base64
import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from freshrank.config import Settings
from freshrank.validation import ExpectationOutcome, ValidationResult
from orchestration.partitions import daily_partitions
from orchestration.resources import FreshrankHome

if TYPE_CHECKING:
    from freshrank.report import DaySummary, Report

DAILY_REPORT = "daily_report"
REPORT_GROUP = "reporting"
PLOT_METADATA_PREFIX = "plot: "
"""Prefix of the metadata keys that hold a plot as a Markdown image."""


def build_report_assets(settings: Settings, partitions: PartitionsDefinition | None = None) -> list[AssetsDefinition]:
    """Build the reporting assets of a home.

    Args:
        settings: Settings of the home.
        partitions: Partitions of the daily loop; default ``daily_partitions(settings)``.
    """
    partitions = partitions or daily_partitions(settings)

    @asset(
        name=DAILY_REPORT,
        partitions_def=partitions,
        deps=[AssetDep("deployment"), AssetDep("online_features"), AssetDep("prediction_drift")],
        group_name=REPORT_GROUP,
        kinds={"matplotlib", "html"},
    )
    def daily_report(context: AssetExecutionContext, freshrank: FreshrankHome) -> MaterializeResult:
        """Plots and summary of the days up to this one: prequential metrics per model version, drift per
        feature, rows per day with quarantined days marked, and feature freshness. Also written as
        ``reports/daily/YYYY-MM-DD/report.html`` under the freshrank home."""
        # Imported here so that matplotlib loads only when a report is rendered, not with the definitions.
        from freshrank.report import write_report

        report = write_report(freshrank.settings(), until=date.fromisoformat(context.partition_key))
        context.log.info(f"wrote {report.path}")
        return MaterializeResult(metadata=daily_report_metadata(report))

    return [daily_report]


def daily_report_metadata(report: "Report") -> dict:
    """Return the materialization metadata of a ``freshrank.report.Report``.

    Numbers are typed, so that the UI plots them over partitions. The plots are Markdown
    images, and report files are paths.
    """
    from freshrank.plots import PLOT_TITLES

    latest = report.latest
    metadata: dict = {"day_state": latest.state}
    metadata.update(_day_numbers(latest))
    gate = latest.record("deployment")
    if gate:
        metadata["gate_decision"] = _gate_text(gate)
    if report.champion is not None:
        metadata["model_version"] = report.champion.version
        if report.champion.tree_count is not None:
            metadata["tree_count"] = int(report.champion.tree_count)
    metadata["summary"] = MetadataValue.md(_summary_markdown(report))
    for name, path in report.plots.items():
        metadata[f"{PLOT_METADATA_PREFIX}{name}"] = MetadataValue.md(_image_markdown(PLOT_TITLES[name], path))
    metadata["quarantine"] = MetadataValue.md(_quarantine_markdown(report))
    if latest.drift_html is not None:
        metadata["evidently_report"] = MetadataValue.path(str(latest.drift_html))
    metadata["html_report"] = MetadataValue.path(str(report.path))
    metadata["plots_folder"] = MetadataValue.path(str(Path(next(iter(report.plots.values()))).parent))
    return metadata


def validation_check_metadata(result: ValidationResult) -> dict:
    """Return check metadata with each expectation's observed value beside its threshold.

    ``expectations`` is a table of every expectation of the suite, failed ones first. Each failed
    expectation also gets ``<check> observed`` and ``<check> threshold`` entries. A dict value is
    split into one entry per key (``event_type_known observed unexpected_rows``). Numbers stay
    numbers, and a list of values becomes comma-separated text.
    """
    records = [
        TableRecord(
            {
                "expectation": outcome.expectation,
                "column": outcome.column or "(table)",
                "status": _outcome_status(outcome),
                "observed": _text(outcome.observed),
                "threshold": _text(outcome.threshold),
            }
        )
        for outcome in sorted(result.outcomes, key=lambda outcome: outcome.success)
    ]
    schema = TableSchema(columns=[TableColumn(name) for name in ("expectation", "column", "status", "observed", "threshold")])
    metadata: dict = {"expectations": MetadataValue.table(records, schema=schema)}
    failed = result.failed()
    if failed:
        metadata["failed"] = ", ".join(outcome.expectation for outcome in failed)
    for outcome in failed:
        metadata.update(_flat_entries(f"{outcome.expectation} observed", outcome.observed))
        metadata.update(_flat_entries(f"{outcome.expectation} threshold", outcome.threshold))
    return metadata


# --- Helpers ----------------------------------------------------------------------------------


def _outcome_status(outcome: ExpectationOutcome) -> str:
    if not outcome.success:
        return "failed"
    if outcome.skipped:
        return "not evaluated"
    return "passed"


def _day_numbers(summary: "DaySummary") -> dict:
    """Return the typed numbers of one day: rows, check, prequential metrics, drift and gate."""
    numbers: dict = {}
    if summary.rows_published is not None:
        numbers["rows_published"] = int(summary.rows_published)
    if summary.validation_passed is not None:
        numbers["check_passed"] = summary.validation_passed
    metrics = summary.record("prequential_evaluation").get("champion_metrics") or {}
    for key in ("auc", "ndcg_at_10", "log_loss"):
        if isinstance(metrics.get(key), (int, float)):
            numbers[f"champion_{key}"] = float(metrics[key])
    drift = summary.record("prediction_drift")
    if drift.get("drift_share") is not None:
        numbers["drift_share"] = float(drift["drift_share"])
    gate = summary.record("deployment")
    if gate:
        numbers["deployed"] = bool(gate.get("deploy"))
    online = summary.record("online_features")
    if online:
        numbers["online_probe_mismatches"] = int(online.get("probe_mismatches", 0))
    return numbers


def _gate_text(gate: dict) -> str:
    if gate.get("deploy"):
        return f"deployed {gate.get('challenger')}"
    reasons = "; ".join(gate.get("reasons") or []) or "no reason recorded"
    return f"kept {gate.get('champion') or 'no champion'}: {reasons}"


def _summary_markdown(report: "Report") -> str:
    from freshrank.plots import QUARANTINED
    from freshrank.report import expectation_text

    latest = report.latest
    days = report.days
    quarantined = [summary for summary in days if summary.state == QUARANTINED]
    lines = [
        f"**{latest.day}: {latest.state}**, report of {days[0].day} .. {latest.day}",
        "",
        "| day | state | rows | check | AUC | NDCG@10 | drift share | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for summary in reversed(days[-7:]):
        metrics = summary.record("prequential_evaluation").get("champion_metrics") or {}
        drift = summary.record("prediction_drift").get("drift_share")
        gate = summary.record("deployment")
        check = {True: "passed", False: "**failed**", None: "-"}[summary.validation_passed]
        decision = "-"
        if gate:
            decision = "deployed" if gate.get("deploy") else "kept"
        lines.append(
            f"| {summary.day} | {summary.state} | {_cell(summary.rows_published)} | {check} | {_cell(metrics.get('auc'))} "
            f"| {_cell(metrics.get('ndcg_at_10'))} | {_cell(drift, 2)} | {decision} |"
        )
    if quarantined:
        lines += ["", f"{len(quarantined)} quarantined day(s):"]
        lines += [f"- {summary.day}: {'; '.join(expectation_text(o) for o in summary.failed_expectations)}" for summary in quarantined]
    return "\n".join(lines) + "\n"


def _quarantine_markdown(report: "Report") -> str:
    from freshrank.report import expectation_text, failed_outcomes, quarantine_status

    entries = [entry for summary in report.days for entry in summary.quarantines]
    if not entries:
        return "No increment has been quarantined.\n"
    lines = ["| day | data version | failed expectations | status | folder |", "|---|---|---|---|---|"]
    for entry in entries:
        validation_file = entry.folder / "validation.json"
        validation = json.loads(validation_file.read_text()) if validation_file.exists() else None
        failed = "<br>".join(expectation_text(outcome) for outcome in failed_outcomes(validation)) or "-"
        status = quarantine_status(entry)
        lines.append(f"| {entry.day} | {entry.data_version} | {failed.replace('|', '/')} | {status} | `{entry.folder}` |")
    return "\n".join(lines) + "\n"


def _image_markdown(title: str, path: Path) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})\n\n{title}; file: `{path}`\n"


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _flat_entries(key: str, value: object) -> dict:
    """Return metadata entries for one observed value or threshold; a dict gives one entry per key."""
    if isinstance(value, dict):
        entries: dict = {}
        for name, item in value.items():
            entries.update(_flat_entries(f"{key} {name}", item))
        return entries
    if value is None:
        return {key: "null"}
    if isinstance(value, (bool, int, float, str)):
        return {key: value}
    if isinstance(value, (list, tuple)) and all(isinstance(item, (int, float, str)) for item in value):
        return {key: ", ".join(str(item) for item in value)}
    return {key: MetadataValue.json(value)}
