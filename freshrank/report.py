"""The freshrank report: one HTML page of the daily loop's state, with its plots embedded.

The report is built from what the pipeline leaves under the home: the per-stage records in
``reports/<stage>/<day>.json``, the validation reports in ``reports/validation/<day>/``, the
quarantine folders, the model registry and ``alerts.jsonl``. It reads no Dagster state, so
``freshrank report`` works on a home whatever ran the loop.

``write_report(settings)`` writes ``<home>/reports/report.html`` over every day, and
``write_report(settings, until=day)`` writes ``<home>/reports/daily/<day>/report.html`` over
the days up to ``day`` (what the ``daily_report`` asset writes per partition). The PNG files
of the plots are written to a ``plots`` folder beside the page and embedded in it as data
URIs, so the page can be copied or mailed on its own. Links to validation reports, Evidently
reports and quarantine folders are relative to the page. A report up to ``until`` shows those
days as the home records them when it is written, so a later correction of an earlier day
appears only in reports written after it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import pandas as pd

from freshrank.alerts import read_alerts
from freshrank.config import Settings
from freshrank.errors import ModelRegistryError, ReportError
from freshrank.increments import landed_days
from freshrank.plots import (
    CHAMPION,
    DEFAULT_DPI,
    DRIFTED,
    NOT_DRIFTED,
    NO_DELIVERY,
    NOT_RUN,
    NOT_TESTED,
    PLOT_TITLES,
    PREQUENTIAL_METRICS,
    PREVIOUS_CHALLENGER,
    PUBLISHED,
    QUARANTINED,
    PlotData,
    render_plots,
)
from freshrank.records import read_record, record_path
from freshrank.staging import QuarantineEntry, list_quarantined
from freshrank.validation import day_bounds_utc

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
DAILY_REPORTS_DIR = "daily"
PLOTS_DIR = "plots"
MAX_ALERTS = 20
"""Alerts listed in a report, newest last."""

_STAGES = ("events", "online_features", "training_rows", "prequential_evaluation", "challenger_model", "prediction_drift", "deployment")
_PLOT_CAPTIONS = {
    "prequential_metrics": "Each day's rows are scored by the champion before any model trains on them "
    "(and by the previous day's challenger when the gate kept it out). Colours are model versions; "
    "a label marks a champion's first day.",
    "drift_by_feature": "Top: share of drifted columns per day (red: over the alert threshold). "
    "Grid: each feature and the prediction per day. Right: share of checked days a feature drifted.",
    "rows_per_day": "Rows published to the warehouse per day; a red band marks a day whose latest "
    "delivery failed validation, with the rejected rows hatched.",
    "feature_freshness": "Top: age of the newest feature partition in the online store at each day "
    "(0: the day's own features are online). Bottom: hours from the end of the event day to the online write.",
}


@dataclass(frozen=True)
class DaySummary:
    """Everything the pipeline recorded about one calendar day; a field is None where a stage has not run."""

    day: date
    landed: bool
    """Whether ``landing/<day>/`` contains an increment file."""
    state: str
    """``published``, ``quarantined`` (the latest delivery failed validation), ``not run``
    (landed but not published) or ``no delivery``."""
    validation: dict | None
    """``reports/validation/<day>/validation.json``: the latest validation of the day."""
    validation_dir: Path | None
    records: dict[str, dict] = field(default_factory=dict)
    """Stage records by stage name (``events``, ``deployment``, ...), for the stages that ran."""
    online_written_at: datetime | None = None
    """Modification time of the ``online_features`` record, written right after the online write."""
    day_end: datetime | None = None
    """The instant the day ends in the business timezone, in UTC."""
    quarantines: tuple[QuarantineEntry, ...] = ()

    def record(self, stage: str) -> dict:
        """Return a stage's record, or an empty dict when the stage has not run for the day."""
        return self.records.get(stage) or {}

    @property
    def rows_published(self) -> int | None:
        """Rows of the day in the warehouse, from the ``events`` record."""
        return self.record("events").get("rows_published")

    @property
    def validation_passed(self) -> bool | None:
        return None if self.validation is None else bool(self.validation.get("success"))

    @property
    def failed_expectations(self) -> list[dict]:
        """Failed expectations of the latest validation, each with ``expectation``, ``column``, ``observed`` and ``threshold``."""
        return failed_outcomes(self.validation)

    @property
    def drift_html(self) -> Path | None:
        path = self.record("prediction_drift").get("html_path")
        return Path(path) if path and Path(path).exists() else None


@dataclass(frozen=True)
class ChampionInfo:
    """The model serving after the report's last day."""

    version: str
    kind: str | None
    tree_count: int | None
    trained_on: str | None
    """Day of the model's last training round."""
    source: str
    """Origin of the version: the registry's champion pointer or the last deployment record."""


@dataclass(frozen=True)
class Report:
    """A written report and what it was built from."""

    path: Path
    """The HTML page."""
    days: list[DaySummary]
    plots: dict[str, Path]
    """PNG file of each plot by name, in the order of ``PLOT_TITLES``."""
    champion: ChampionInfo | None
    alerts: list[dict]
    until: date | None
    generated_at: datetime

    @property
    def latest(self) -> DaySummary:
        """The newest day of the report."""
        return self.days[-1]


def failed_outcomes(validation: dict | None) -> list[dict]:
    """Return the failed expectations of a validation result dict, with observed values and thresholds."""
    if not validation:
        return []
    return [
        {key: outcome.get(key) for key in ("expectation", "column", "observed", "threshold")}
        for outcome in validation.get("outcomes", [])
        if not outcome.get("success")
    ]


def report_path(settings: Settings, until: date | None = None) -> Path:
    """Return where the report over every day (``until`` None) or over the days up to ``until`` is written."""
    if until is None:
        return settings.reports_dir / REPORT_FILE
    return settings.reports_dir / DAILY_REPORTS_DIR / until.isoformat() / REPORT_FILE


def write_report(
    settings: Settings,
    until: date | None = None,
    output: Path | None = None,
    dpi: int = DEFAULT_DPI,
    on_step: Callable[[str], None] | None = None,
) -> Report:
    """Collect the home's records, render the plots and write the HTML page.

    Args:
        settings: Settings of the home.
        until: Last day of the report; None reports every day and the current champion pointer.
        output: HTML file to write; default ``report_path(settings, until)``. The plots go to
            a ``plots`` folder beside it.
        dpi: Pixels per inch of the plots.
        on_step: Called with the name of each finished step (``collect``, each plot, ``html``),
            for progress display.

    Returns:
        The written report.

    Raises:
        ReportError: The home has no landed or processed day up to ``until``.
    """
    step = on_step or (lambda name: None)
    days = collect_days(settings, until)
    step("collect")
    output = Path(output) if output is not None else report_path(settings, until)
    output.parent.mkdir(parents=True, exist_ok=True)
    plots = render_plots(plot_data(days), output.parent / PLOTS_DIR, dpi=dpi, on_plot=step)
    report = Report(
        path=output,
        days=days,
        plots=plots,
        champion=champion_info(settings, days, until),
        alerts=_alerts_until(settings, until),
        until=until,
        generated_at=datetime.now(timezone.utc),
    )
    _write_text_atomic(output, render_html(report, settings))
    step("html")
    logger.info("wrote the report of %s .. %s to %s", days[0].day, days[-1].day, output)
    return report


# --- Collecting -------------------------------------------------------------------------------


def collect_days(settings: Settings, until: date | None = None) -> list[DaySummary]:
    """Return a summary of every calendar day from the first landed or processed day to the last.

    Raises:
        ReportError: No day up to ``until`` was landed or processed.
    """
    landed = set(landed_days(settings.landing_dir))
    known = landed | _processed_days(settings)
    if until is not None:
        known = {day for day in known if day <= until}
    if not known:
        limit = f" up to {until}" if until is not None else ""
        raise ReportError(
            f"{settings.home} has no landed or processed day{limit} to report on; "
            "deliver increments to its landing folder and run `freshrank run` (or `freshrank demo`) first"
        )
    first, last = min(known), max(known)
    calendar = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    quarantines: dict[str, list[QuarantineEntry]] = {}
    for entry in list_quarantined(settings):
        quarantines.setdefault(entry.day, []).append(entry)
    return [_summarize_day(settings, day, day in landed, tuple(quarantines.get(day.isoformat(), ()))) for day in calendar]


def _processed_days(settings: Settings) -> set[date]:
    """Return the days that have a stage record or a validation report."""
    days: set[date] = set()
    for stage in _STAGES:
        days.update(_day_names(path.stem for path in (settings.reports_dir / stage).glob("*.json")))
    validation_root = settings.reports_dir / "validation"
    if validation_root.is_dir():
        days.update(_day_names(path.name for path in validation_root.iterdir() if (path / "validation.json").exists()))
    return days


def _day_names(names) -> set[date]:
    days = set()
    for name in names:
        try:
            days.add(date.fromisoformat(name))
        except ValueError:
            logger.debug("ignored %r: not a day name", name)
    return days


def _summarize_day(settings: Settings, day: date, landed: bool, quarantines: tuple[QuarantineEntry, ...]) -> DaySummary:
    records = {stage: record for stage in _STAGES if (record := read_record(settings, stage, day)) is not None}
    validation_dir = settings.reports_dir / "validation" / day.isoformat()
    validation_file = validation_dir / "validation.json"
    validation = json.loads(validation_file.read_text()) if validation_file.exists() else None
    if validation is not None and not validation.get("success"):
        state = QUARANTINED
    elif "events" in records:
        state = PUBLISHED
    elif landed or validation is not None:
        state = NOT_RUN
    else:
        state = NO_DELIVERY
    online_written_at = None
    if "online_features" in records:
        mtime = record_path(settings, "online_features", day).stat().st_mtime
        online_written_at = datetime.fromtimestamp(mtime, tz=timezone.utc)
    return DaySummary(
        day=day,
        landed=landed,
        state=state,
        validation=validation,
        validation_dir=validation_dir if validation is not None else None,
        records=records,
        online_written_at=online_written_at,
        day_end=day_bounds_utc(day, settings.timezone)[1].to_pydatetime(),
        quarantines=quarantines,
    )


def champion_info(settings: Settings, days: list[DaySummary], until: date | None) -> ChampionInfo | None:
    """Return the serving model: the registry's pointer for a report over every day, else the last deployment record's champion."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_dir)
    version, source = None, ""
    if until is None:
        version, source = registry.champion(), "registry champion pointer"
    if version is None:
        for summary in reversed(days):
            version = summary.record("deployment").get("champion")
            if version:
                source = f"deployment record of {summary.day}"
                break
    if not version:
        return None
    try:
        metadata = registry.metadata(version)
    except ModelRegistryError as exc:
        logger.warning("champion %s has no readable registry metadata: %s", version, exc)
        metadata = {}
    return ChampionInfo(version, metadata.get("kind"), metadata.get("tree_count"), metadata.get("day"), source)


def _alerts_until(settings: Settings, until: date | None) -> list[dict]:
    alerts = read_alerts(settings)
    if until is not None:
        alerts = [alert for alert in alerts if str(alert.get("day", "")) <= until.isoformat()]
    return alerts[-MAX_ALERTS:]


# --- Plot frames ------------------------------------------------------------------------------


def plot_data(days: list[DaySummary]) -> PlotData:
    """Turn day summaries into the frames of ``freshrank.plots``."""
    drift_columns, drift_days = _drift_frames(days)
    return PlotData(
        days=[summary.day for summary in days],
        metrics=_metrics_frame(days),
        drift_columns=drift_columns,
        drift_days=drift_days,
        volume=_volume_frame(days),
        freshness=_freshness_frame(days),
    )


def _metrics_frame(days: list[DaySummary]) -> pd.DataFrame:
    rows = []
    for summary in days:
        evaluation = summary.record("prequential_evaluation")
        champion = evaluation.get("champion")
        scored = [(CHAMPION, champion, evaluation.get("champion_metrics"))]
        challenger = evaluation.get("previous_challenger")
        if challenger and challenger != champion:
            scored.append((PREVIOUS_CHALLENGER, challenger, evaluation.get("previous_challenger_metrics")))
        for role, version, metrics in scored:
            if version and metrics:
                rows.append({"day": summary.day, "role": role, "version": version} | {m: metrics.get(m) for m in PREQUENTIAL_METRICS})
    columns = ["day", "role", "version", *PREQUENTIAL_METRICS]
    return pd.DataFrame(rows, columns=columns).astype({metric: "float64" for metric in PREQUENTIAL_METRICS})


def _drift_frames(days: list[DaySummary]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return per-column drift statuses and the daily drift shares of the days that ran a drift check.

    A record without per-column results (``columns``) lists only its drifted columns. The other
    columns seen on any day then count as not drifted on that day, and ``per_column`` is False.
    """
    checked = [(summary.day, summary.record("prediction_drift")) for summary in days]
    checked = [(day, record) for day, record in checked if record.get("drift_share") is not None]
    known_columns: list[str] = []
    for _, record in checked:
        known_columns.extend(record.get("columns") or {})
        known_columns.extend(record.get("drifted_columns") or [])
    known_columns = list(dict.fromkeys(known_columns))

    statuses, shares = [], []
    for day, record in checked:
        per_column = isinstance(record.get("columns"), dict)
        shares.append(
            {
                "day": day,
                "drift_share": float(record["drift_share"]),
                "threshold": record.get("threshold"),
                "alert": bool(record.get("alert")),
                "per_column": per_column,
            }
        )
        if per_column:
            for column, result in record["columns"].items():
                statuses.append({"day": day, "column": column, "status": _column_status(result)})
        else:
            drifted = set(record.get("drifted_columns") or [])
            for column in known_columns:
                statuses.append({"day": day, "column": column, "status": DRIFTED if column in drifted else NOT_DRIFTED})
    drift_columns = pd.DataFrame(statuses, columns=["day", "column", "status"])
    drift_days = pd.DataFrame(shares, columns=["day", "drift_share", "threshold", "alert", "per_column"])
    return drift_columns, drift_days.astype({"threshold": "float64"})


def _column_status(result: dict) -> str:
    """Map one column's result of ``freshrank.drift.DriftResult.columns`` to a plot status."""
    if result.get("drifted"):
        return DRIFTED
    if result.get("stat_test") is None:
        return NOT_TESTED
    return NOT_DRIFTED


def _volume_frame(days: list[DaySummary]) -> pd.DataFrame:
    rows = []
    for summary in days:
        rejected = None
        if summary.state == QUARANTINED and summary.validation is not None:
            rejected = summary.validation.get("row_count")
        rows.append({"day": summary.day, "state": summary.state, "rows_published": summary.rows_published, "rows_rejected": rejected})
    frame = pd.DataFrame(rows, columns=["day", "state", "rows_published", "rows_rejected"])
    return frame.astype({"rows_published": "float64", "rows_rejected": "float64"})


def _freshness_frame(days: list[DaySummary]) -> pd.DataFrame:
    """Return, per day, the age of the newest online feature partition and the latency of the day's online write."""
    rows = []
    newest_online: date | None = None
    for summary in days:
        online = summary.record("online_features")
        if online:
            newest_online = summary.day
        age = (summary.day - newest_online).days if newest_online is not None else None
        latency = None
        if online and summary.online_written_at is not None and summary.day_end is not None:
            latency = (summary.online_written_at - summary.day_end).total_seconds() / 3600.0
        rows.append({"day": summary.day, "age_days": age, "latency_hours": latency})
    return pd.DataFrame(rows, columns=["day", "age_days", "latency_hours"]).astype({"age_days": "float64", "latency_hours": "float64"})


# --- HTML -------------------------------------------------------------------------------------


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00020; font-weight: 600; } .good { color: #1b7a1b; } .muted { color: #777; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; max-width: 1000px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; font-size: 14px; }
dt { font-weight: 600; } td.time { white-space: nowrap; }
"""


def render_html(report: Report, settings: Settings) -> str:
    """Return the report as one HTML page with the plots embedded as PNG data URIs."""
    base = report.path.parent
    days = report.days
    scope = f"days {days[0].day} .. {days[-1].day}"
    sections = [
        f"<h1>freshrank report: {_e(scope)}</h1>",
        f"<p class='muted'>home {_e(settings.home)}; generated {_e(report.generated_at.isoformat(timespec='seconds'))}</p>",
        _latest_day_section(report.latest, report.champion, base),
        "<h2>Plots</h2>",
        *(_figure_html(name, path) for name, path in report.plots.items()),
        _days_table(days, base),
        _quarantine_section(days, base),
        _alerts_section(report.alerts),
    ]
    body = "\n".join(sections)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>freshrank report {_e(scope)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _latest_day_section(summary: DaySummary, champion: ChampionInfo | None, base: Path) -> str:
    items = [("state", _state_html(summary))]
    if summary.rows_published is not None:
        items.append(("rows published", f"{summary.rows_published:,}"))
    items.append(("validation", _validation_html(summary, base)))
    evaluation = summary.record("prequential_evaluation")
    metrics = evaluation.get("champion_metrics") or {}
    if metrics:
        scores = ", ".join(f"{label} {_number(metrics.get(key))}" for key, label in PREQUENTIAL_METRICS.items())
        items.append(("champion before training", f"{_e(evaluation.get('champion'))}: {scores}"))
    deployment = summary.record("deployment")
    if deployment:
        items.append(("gate", _gate_html(deployment)))
    drift = summary.record("prediction_drift")
    if drift.get("drift_share") is not None:
        items.append(("drift", _drift_html(summary, base)))
    online = summary.record("online_features")
    if online:
        items.append(("online features", f"{online.get('probe_values', 0):,} values of {online.get('probe_entities', 0)} entities read back, "
                      f"{online.get('probe_mismatches', 0)} mismatches"))
    if champion is not None:
        items.append(("serving model", _champion_html(champion)))
    rows = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in items)
    return f"<h2>Latest day: {_e(summary.day)}</h2><dl>{rows}</dl>"


def _state_html(summary: DaySummary) -> str:
    css = {PUBLISHED: "good", QUARANTINED: "bad"}.get(summary.state, "muted")
    return f"<span class='{css}'>{_e(summary.state)}</span>"


def _validation_html(summary: DaySummary, base: Path) -> str:
    if summary.validation is None:
        return "<span class='muted'>not validated</span>"
    link = _link(summary.validation_dir / "validation.md", "report", base) if summary.validation_dir else ""
    if summary.validation_passed:
        return f"<span class='good'>passed</span> ({summary.validation.get('row_count', 0):,} rows) {link}"
    failed = "; ".join(expectation_text(outcome) for outcome in summary.failed_expectations)
    return f"<span class='bad'>failed</span>: {_e(failed)} {link}"


def expectation_text(outcome: dict) -> str:
    """Return one failed expectation as ``name on column: observed ..., threshold ...``."""
    column = f" on {outcome['column']}" if outcome.get("column") else ""
    return f"{outcome['expectation']}{column}: observed {compact_value(outcome.get('observed'))}, threshold {compact_value(outcome.get('threshold'))}"


def _gate_html(deployment: dict) -> str:
    challenger = deployment.get("challenger") or "none"
    if deployment.get("deploy"):
        return f"<span class='good'>deployed</span> {_e(challenger)}"
    reasons = "; ".join(deployment.get("reasons") or []) or "no reason recorded"
    return f"<span class='bad'>kept</span> {_e(deployment.get('champion') or 'no champion')}, challenger {_e(challenger)} refused: {_e(reasons)}"


def _drift_html(summary: DaySummary, base: Path) -> str:
    drift = summary.record("prediction_drift")
    css = "bad" if drift.get("alert") else "good"
    text = f"<span class='{css}'>share {_number(drift['drift_share'], 2)}</span> (alert above {_number(drift.get('threshold'), 2)})"
    drifted = drift.get("drifted_columns") or []
    if drifted:
        text += f", {len(drifted)} drifted: {_e(', '.join(drifted[:8]))}{' …' if len(drifted) > 8 else ''}"
    if summary.drift_html is not None:
        text += " " + _link(summary.drift_html, "Evidently report", base)
    return text


def _champion_html(champion: ChampionInfo) -> str:
    details = [f"{champion.tree_count} trees" if champion.tree_count is not None else None, champion.kind, f"last trained on {champion.trained_on}" if champion.trained_on else None]
    detail = ", ".join(item for item in details if item)
    return f"{_e(champion.version)} ({_e(detail)}) <span class='muted'>from the {_e(champion.source)}</span>"


def _figure_html(name: str, path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    title = PLOT_TITLES[name]
    return (
        f"<figure id='{name}'><img src='data:image/png;base64,{encoded}' alt='{_e(title)}'>"
        f"<figcaption><b>{_e(title)}.</b> {_e(_PLOT_CAPTIONS[name])}</figcaption></figure>"
    )


def _days_table(days: list[DaySummary], base: Path) -> str:
    header = ["day", "state", "rows", "check", "AUC", "NDCG@10", "drift share", "challenger", "gate", "serving after", "reports"]
    rows = []
    for summary in reversed(days):
        metrics = summary.record("prequential_evaluation").get("champion_metrics") or {}
        drift = summary.record("prediction_drift")
        deployment = summary.record("deployment")
        check = {True: "<span class='good'>passed</span>", False: "<span class='bad'>failed</span>", None: "-"}[summary.validation_passed]
        gate = "-"
        if deployment:
            gate = "<span class='good'>deployed</span>" if deployment.get("deploy") else "<span class='bad'>kept</span>"
        links = []
        if summary.validation_dir is not None:
            links.append(_link(summary.validation_dir / "validation.md", "validation", base))
        if summary.drift_html is not None:
            links.append(_link(summary.drift_html, "drift", base))
        for entry in summary.quarantines:
            links.append(_link(entry.folder, f"quarantine {entry.data_version[:8]}", base))
        cells = [
            _e(summary.day),
            _state_html(summary),
            _number_cell(summary.rows_published),
            check,
            _number_cell(metrics.get("auc")),
            _number_cell(metrics.get("ndcg_at_10")),
            _number_cell(drift.get("drift_share"), 2),
            _e(_short_version(summary.record("challenger_model").get("version"))),
            gate,
            _e(_short_version(deployment.get("champion"))),
            " ".join(links),
        ]
        rows.append("<tr>" + "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    return f"<h2>Days</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _quarantine_section(days: list[DaySummary], base: Path) -> str:
    entries = [entry for summary in days for entry in summary.quarantines]
    if not entries:
        return "<h2>Quarantine</h2><p>No increment has been quarantined.</p>"
    rows = []
    for entry in entries:
        validation_file = entry.folder / "validation.json"
        validation = json.loads(validation_file.read_text()) if validation_file.exists() else None
        failed = "<br>".join(_e(expectation_text(outcome)) for outcome in failed_outcomes(validation)) or "-"
        released = quarantine_status(entry)
        rows.append(
            f"<tr><td>{_e(entry.day)}</td><td>{_e(entry.data_version)}</td><td class='time'>{_e(entry.record.get('quarantined_at', '-'))}</td>"
            f"<td>{failed}</td><td>{_e(released)}</td><td>{_link(entry.folder, 'folder', base)}</td></tr>"
        )
    head = "".join(f"<th>{name}</th>" for name in ("day", "data version", "quarantined at", "failed expectations", "status", "files"))
    return f"<h2>Quarantine</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def quarantine_status(entry: QuarantineEntry) -> str:
    """Return ``released``, ``held`` or ``interrupted`` (the copy stopped before ``quarantine.json``)."""
    if entry.release:
        return "released"
    if not entry.complete:
        return "interrupted"
    return "held"


def _alerts_section(alerts: list[dict]) -> str:
    if not alerts:
        return "<h2>Alerts</h2><p>No alert has been raised.</p>"
    rows = "".join(
        f"<tr><td class='time'>{_e(alert.get('time', ''))}</td><td>{_e(alert.get('kind', ''))}</td><td class='time'>{_e(alert.get('day', ''))}</td><td>{_e(alert.get('message', ''))}</td></tr>"
        for alert in reversed(alerts)
    )
    return f"<h2>Alerts (newest first, at most {MAX_ALERTS})</h2><table><thead><tr><th>time</th><th>kind</th><th>day</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"


def _link(target: Path, text: str, base: Path) -> str:
    relative = Path(os.path.relpath(target, base)).as_posix()
    return f"<a href='{_e(quote(relative))}'>{_e(text)}</a>"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _number_cell(value: object, digits: int = 3) -> str:
    return f"<td class='num'>{_e(_number(value, digits))}</td>"


def compact_value(value: object) -> str:
    """Return a string as it is and any other value as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _short_version(version: str | None) -> str:
    return version.split("-", 1)[0] if version else "-"


def _write_text_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
