"""Plots, the HTML report, `freshrank report` and the UI metadata, on a home of written stage records."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from dagster import MetadataValue

from freshrank.alerts import raise_alert
from freshrank.config import DriftConfig, Settings, load_settings
from freshrank.drift import check_drift
from freshrank.errors import ReportError
from freshrank.plots import (
    DRIFTED,
    NOT_DRIFTED,
    NOT_TESTED,
    PLOT_TITLES,
    PlotData,
    draw_drift_by_feature,
    draw_feature_freshness,
    draw_prequential_metrics,
    draw_rows_per_day,
    render_plots,
)
from freshrank.records import record_path, write_record
from freshrank.report import collect_days, plot_data, report_path, write_report
from freshrank.staging import quarantine_increment
from freshrank.validation import ExpectationOutcome, ValidationResult, write_validation_report
from orchestration.report_assets import PLOT_METADATA_PREFIX, daily_report_metadata, validation_check_metadata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIRST = date(2024, 3, 1)
BAD_DAY = date(2024, 3, 3)
LANDED_ONLY = date(2024, 3, 6)
"""Landed but never processed; 5 March has no delivery at all."""
ROWS = {date(2024, 3, 1): 100, date(2024, 3, 2): 120, date(2024, 3, 4): 130}
REJECTED_ROWS = 90
ONLINE_LATENCY_HOURS = 5.0


def _outcome(name: str, column: str | None, success: bool, observed: object, threshold: object) -> ExpectationOutcome:
    return ExpectationOutcome(name, column, success, observed, threshold, [], expectation_type="expect_test")


def _validation(day: date, rows: int, failed: bool) -> ValidationResult:
    outcomes = [
        _outcome("item_id_not_null", "item_id", True, {"unexpected_rows": 0}, {"max_null_rows": 0}),
        _outcome(
            "event_type_known",
            "event_type",
            not failed,
            {"unexpected_rows": 40 if failed else 0},
            {"allowed_values": ["view", "add_to_cart", "purchase"]},
        ),
        _outcome("duplicate_share", None, True, 0.01, 0.05),
    ]
    return ValidationResult(day.isoformat(), not failed, outcomes, {}, rows)


def _metrics(auc: float, ndcg: float, log_loss: float) -> dict:
    return {"auc": auc, "ndcg_at_10": ndcg, "log_loss": log_loss, "rows": 50}


def _drift_column(drifted: bool, tested: bool = True) -> dict:
    if not tested:
        return {"stat_test": None, "drift_score": None, "threshold": None, "drifted": False, "note": "not tested"}
    return {"stat_test": "ks", "drift_score": 0.01 if drifted else 0.4, "threshold": 0.05, "drifted": drifted, "note": ""}


def _land(settings: Settings, day: date) -> Path:
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.csv"
    path.write_text(f"event_time,user_id,item_id,event_type\n{day}T10:00:00Z,u1,i1,view\n")
    return path


def _write_good_day(settings: Settings, day: date) -> None:
    write_validation_report(_validation(day, ROWS[day], failed=False), settings.reports_dir / "validation" / day.isoformat())
    write_record(settings, "events", day, {"day": day.isoformat(), "rows_in": ROWS[day], "rows_published": ROWS[day]})
    window_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    online = {"window_start": (window_end - timedelta(days=1)).isoformat(), "window_end": window_end.isoformat(),
              "probe_entities": 10, "probe_values": 100, "probe_mismatches": 0, "probe_matched": True, "mismatches": []}
    path = write_record(settings, "online_features", day, online)
    written = (window_end + timedelta(hours=ONLINE_LATENCY_HOURS)).timestamp()
    os.utime(path, (written, written))


@pytest.fixture
def records_home(tmp_path: Path) -> Settings:
    """A home whose stage records describe 1 .. 6 March 2024: 3 March quarantined, 5 March not delivered, 6 March not run."""
    settings = load_settings(tmp_path / "home")
    for day in (*ROWS, BAD_DAY, LANDED_ONLY):
        _land(settings, day)
    for day in ROWS:
        _write_good_day(settings, day)

    day1, day2, day4 = ROWS
    write_record(settings, "prequential_evaluation", day1, {"champion": None, "day": day1.isoformat(), "rows": 80})
    write_record(settings, "challenger_model", day1, {"version": "v0001-2024-03-01", "kind": "full", "trees": 200})
    write_record(settings, "prediction_drift", day1, {"drift_share": None, "alert": False, "skipped_reason": "no reference"})
    write_record(settings, "deployment", day1, {"challenger": "v0001-2024-03-01", "champion": "v0001-2024-03-01", "deploy": True, "reasons": []})

    write_record(settings, "prequential_evaluation", day2, {
        "champion": "v0001-2024-03-01", "champion_metrics": _metrics(0.61, 0.52, 0.31),
        "previous_challenger": "v0001-2024-03-01", "previous_challenger_metrics": _metrics(0.61, 0.52, 0.31), "rows": 90,
    })
    write_record(settings, "challenger_model", day2, {"version": "v0002-2024-03-02", "kind": "continued", "trees": 210})
    write_record(settings, "prediction_drift", day2, {
        "drift_share": 1 / 3, "threshold": 0.5, "alert": False, "drifted_columns": ["f1"],
        "columns": {"f1": _drift_column(True), "f2": _drift_column(False), "f3": _drift_column(False, tested=False),
                    "prediction": _drift_column(False)},
    })
    write_record(settings, "deployment", day2, {
        "challenger": "v0002-2024-03-02", "champion": "v0001-2024-03-01", "deploy": False,
        "reasons": ["holdout ndcg_at_10 0.40 is below the champion's 0.52 by more than the tolerance 0.01"],
    })

    failed = _validation(BAD_DAY, REJECTED_ROWS, failed=True)
    write_validation_report(failed, settings.reports_dir / "validation" / BAD_DAY.isoformat())
    landing_file = settings.landing_dir / BAD_DAY.isoformat() / "events.csv"
    quarantine_increment(settings, BAD_DAY, (str(landing_file),), {**failed.to_dict(), "data_version": "feedbeef0001"}, failed.to_markdown())
    raise_alert(settings, "data_quality", BAD_DAY.isoformat(), "increment 2024-03-03 failed validation (event_type_known)")

    write_record(settings, "prequential_evaluation", day4, {
        "champion": "v0001-2024-03-01", "champion_metrics": _metrics(0.64, 0.55, 0.29),
        "previous_challenger": "v0002-2024-03-02", "previous_challenger_metrics": _metrics(0.58, 0.49, 0.33), "rows": 95,
    })
    write_record(settings, "challenger_model", day4, {"version": "v0003-2024-03-04", "kind": "continued", "trees": 220})
    drift_html = settings.reports_dir / "drift" / f"{day4}.html"
    drift_html.parent.mkdir(parents=True, exist_ok=True)
    drift_html.write_text("<html><body>Evidently report</body></html>")
    # A record written before per-column results were stored: only the drifted columns are listed.
    write_record(settings, "prediction_drift", day4, {
        "drift_share": 0.5, "threshold": 0.5, "alert": False, "drifted_columns": ["f2", "prediction"],
        "html_path": str(drift_html),
    })
    write_record(settings, "deployment", day4, {"challenger": "v0003-2024-03-04", "champion": "v0003-2024-03-04", "deploy": True, "reasons": []})
    return settings


def _decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _data_uri_images(text: str) -> list[bytes]:
    return [base64.b64decode(encoded) for encoded in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]


# --- Collecting -------------------------------------------------------------------------------


def test_days_cover_calendar(records_home):
    days = collect_days(records_home)
    assert [summary.day for summary in days] == [FIRST + timedelta(days=offset) for offset in range(6)]


def test_day_states(records_home):
    states = {summary.day.isoformat(): summary.state for summary in collect_days(records_home)}
    assert states == {
        "2024-03-01": "published",
        "2024-03-02": "published",
        "2024-03-03": "quarantined",
        "2024-03-04": "published",
        "2024-03-05": "no delivery",
        "2024-03-06": "not run",
    }


def test_bad_day_failed_expectation(records_home):
    bad = next(summary for summary in collect_days(records_home) if summary.day == BAD_DAY)
    assert bad.failed_expectations == [
        {
            "expectation": "event_type_known",
            "column": "event_type",
            "observed": {"unexpected_rows": 40},
            "threshold": {"allowed_values": ["view", "add_to_cart", "purchase"]},
        }
    ]
    assert len(bad.quarantines) == 1
    assert bad.quarantines[0].data_version == "feedbeef0001"


def test_until_limits_days(records_home):
    days = collect_days(records_home, until=date(2024, 3, 2))
    assert [summary.day for summary in days] == [date(2024, 3, 1), date(2024, 3, 2)]


def test_empty_home_raises(tmp_path):
    with pytest.raises(ReportError, match="no landed or processed day"):
        collect_days(load_settings(tmp_path / "empty"))


# --- Plot frames ------------------------------------------------------------------------------


def test_metrics_frame_roles(records_home):
    metrics = plot_data(collect_days(records_home)).metrics
    rows = [(row.day.isoformat(), row.role, row.version, row.auc) for row in metrics.itertuples()]
    assert rows == [
        ("2024-03-02", "champion", "v0001-2024-03-01", 0.61),
        ("2024-03-04", "champion", "v0001-2024-03-01", 0.64),
        ("2024-03-04", "previous challenger", "v0002-2024-03-02", 0.58),
    ]


def test_drift_statuses(records_home):
    data = plot_data(collect_days(records_home))
    statuses = {(row.day.isoformat(), row.column): row.status for row in data.drift_columns.itertuples()}
    assert statuses == {
        ("2024-03-02", "f1"): DRIFTED,
        ("2024-03-02", "f2"): NOT_DRIFTED,
        ("2024-03-02", "f3"): NOT_TESTED,
        ("2024-03-02", "prediction"): NOT_DRIFTED,
        ("2024-03-04", "f1"): NOT_DRIFTED,
        ("2024-03-04", "f2"): DRIFTED,
        ("2024-03-04", "f3"): NOT_DRIFTED,
        ("2024-03-04", "prediction"): DRIFTED,
    }
    assert data.drift_days["per_column"].tolist() == [True, False]


def test_drift_statuses_from_evidently(records_home):
    generator = np.random.default_rng(5)
    reference = pd.DataFrame({"shifted": generator.normal(0, 1, 400), "steady": generator.normal(0, 1, 400), "empty": np.nan})
    current = pd.DataFrame({"shifted": generator.normal(3, 1, 400), "steady": generator.normal(0, 1, 400), "empty": np.nan})
    result = check_drift(reference, current, ["shifted", "steady", "empty"], DriftConfig(), html_path=None)
    day = date(2024, 3, 2)
    write_record(records_home, "prediction_drift", day, {
        "drift_share": result.drift_share, "threshold": result.threshold, "alert": result.alert,
        "drifted_columns": result.drifted_columns, "columns": result.columns,
    })
    statuses = plot_data(collect_days(records_home)).drift_columns
    on_day = dict(zip(statuses[statuses["day"] == day]["column"], statuses[statuses["day"] == day]["status"]))
    assert on_day == {"shifted": DRIFTED, "steady": NOT_DRIFTED, "empty": NOT_TESTED}


def test_volume_frame(records_home):
    volume = plot_data(collect_days(records_home)).volume
    assert volume["rows_published"].fillna(-1).tolist() == [100, 120, -1, 130, -1, -1]
    assert volume["rows_rejected"].fillna(-1).tolist() == [-1, -1, REJECTED_ROWS, -1, -1, -1]


def test_freshness_frame(records_home):
    freshness = plot_data(collect_days(records_home)).freshness
    assert freshness["age_days"].tolist() == [0, 0, 1, 0, 1, 2]
    assert freshness["latency_hours"].iloc[0] == pytest.approx(ONLINE_LATENCY_HOURS, abs=0.01)
    assert freshness["latency_hours"].isna().tolist() == [False, False, True, False, True, True]


# --- Drawings ---------------------------------------------------------------------------------


def test_rows_plot_marks_quarantine(records_home):
    data = plot_data(collect_days(records_home))
    axis = draw_rows_per_day(data.volume, data.days).axes[0]
    published, rejected = axis.containers
    assert [patch.get_height() for patch in published] == [100, 120, 0, 130, 0, 0]
    assert [patch.get_height() for patch in rejected] == [REJECTED_ROWS]
    assert rejected[0].get_hatch() == "//"


def test_drift_grid_cells(records_home):
    data = plot_data(collect_days(records_home))
    figure = draw_drift_by_feature(data.drift_columns, data.drift_days, data.days)
    grid_axis, share_axis = figure.axes[1], figure.axes[2]
    codes = grid_axis.images[0].get_array()
    assert [label.get_text() for label in grid_axis.get_yticklabels()] == ["f1", "f2", "f3", "prediction"]
    assert codes.mask[:, 0].all()  # 1 March ran no drift check
    assert codes[:, 1].tolist() == [2, 1, 0, 1]  # drifted, not drifted, not tested, not drifted
    assert [patch.get_width() for patch in share_axis.patches] == [0.5, 0.5, 0.0, 0.5]


def test_prequential_labels_champions(records_home):
    data = plot_data(collect_days(records_home))
    figure = draw_prequential_metrics(data.metrics, data.days)
    assert [text.get_text() for text in figure.axes[0].texts] == ["v0001"]
    champion_points = figure.axes[0].collections[0].get_offsets()
    assert champion_points.tolist() == [[1.0, 0.61], [3.0, 0.64]]


def test_freshness_bars(records_home):
    data = plot_data(collect_days(records_home))
    age_axis = draw_feature_freshness(data.freshness, data.days).axes[0]
    assert [patch.get_height() for patch in age_axis.patches] == [0, 0, 1, 0, 1, 2]


def test_render_writes_pngs(records_home, tmp_path):
    data = plot_data(collect_days(records_home))
    paths = render_plots(data, tmp_path / "plots", dpi=50)
    assert list(paths) == list(PLOT_TITLES)
    for name, path in paths.items():
        pixels = _decode_png(path.read_bytes())
        assert pixels.shape[1] == 400, name  # 8 inches (the narrowest figure) at 50 dpi
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"


def test_render_without_records(tmp_path):
    days = [date(2024, 3, 1), date(2024, 3, 2)]
    empty = PlotData(days, *(pd.DataFrame(columns=["day"]) for _ in range(5)))
    paths = render_plots(empty, tmp_path / "plots")
    for path in paths.values():
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_render_needs_days(tmp_path):
    empty = PlotData([], *(pd.DataFrame(columns=["day"]) for _ in range(5)))
    with pytest.raises(ValueError, match="no days to plot"):
        render_plots(empty, tmp_path / "plots")


# --- HTML report ------------------------------------------------------------------------------


def test_report_embeds_plots(records_home):
    report = write_report(records_home, dpi=40)
    assert report.path == records_home.home / "reports" / "report.html"
    images = _data_uri_images(report.path.read_text())
    assert len(images) == len(PLOT_TITLES)
    for image in images:
        assert _decode_png(image).shape[0] > 100


def test_report_lists_quarantine(records_home):
    text = write_report(records_home).path.read_text()
    assert "feedbeef0001" in text
    assert "event_type_known on event_type: observed {&quot;unexpected_rows&quot;: 40}" in text
    assert "increment 2024-03-03 failed validation" in text


def test_report_links_resolve(records_home):
    report = write_report(records_home)
    links = re.findall(r"href='([^']+)'", report.path.read_text())
    assert any("drift/2024-03-04.html" in link for link in links)
    assert any("quarantine/2024-03-03/feedbeef0001" in link for link in links)
    for link in links:
        assert (report.path.parent / link).exists(), link


def test_daily_report_path(records_home):
    report = write_report(records_home, until=date(2024, 3, 2))
    assert report.path == report_path(records_home, date(2024, 3, 2))
    assert report.path.parent == records_home.reports_dir / "daily" / "2024-03-02"
    assert (report.path.parent / "plots" / "rows_per_day.png").exists()
    assert report.latest.day == date(2024, 3, 2)
    assert report.alerts == []


def test_report_champion_fallback(records_home):
    report = write_report(records_home, until=date(2024, 3, 4))
    assert report.champion.version == "v0003-2024-03-04"
    assert report.champion.source == "deployment record of 2024-03-04"


# --- UI metadata ------------------------------------------------------------------------------


def test_check_metadata_observed_threshold():
    metadata = validation_check_metadata(_validation(BAD_DAY, REJECTED_ROWS, failed=True))
    assert metadata["event_type_known observed unexpected_rows"] == 40
    assert metadata["event_type_known threshold allowed_values"] == "view, add_to_cart, purchase"
    assert metadata["failed"] == "event_type_known"
    assert "item_id_not_null observed unexpected_rows" not in metadata


def test_check_metadata_table_failed_first():
    table = validation_check_metadata(_validation(BAD_DAY, REJECTED_ROWS, failed=True))["expectations"]
    rows = [record.data for record in table.records]
    assert [row["expectation"] for row in rows] == ["event_type_known", "item_id_not_null", "duplicate_share"]
    assert rows[0]["status"] == "failed"
    assert rows[0]["observed"] == '{"unexpected_rows": 40}'
    assert rows[2]["column"] == "(table)"


def test_daily_metadata_typed(records_home):
    metadata = daily_report_metadata(write_report(records_home, until=date(2024, 3, 4), dpi=40))
    assert metadata["rows_published"] == 130
    assert metadata["drift_share"] == 0.5
    assert metadata["deployed"] is True
    assert metadata["champion_auc"] == 0.64
    assert metadata["model_version"] == "v0003-2024-03-04"
    assert metadata["gate_decision"] == "deployed v0003-2024-03-04"
    assert metadata["evidently_report"] == MetadataValue.path(str(records_home.reports_dir / "drift" / "2024-03-04.html"))


def test_daily_metadata_images(records_home):
    metadata = daily_report_metadata(write_report(records_home, until=date(2024, 3, 4), dpi=40))
    for name in PLOT_TITLES:
        markdown = metadata[f"{PLOT_METADATA_PREFIX}{name}"].md_str
        images = _data_uri_images(markdown)
        assert len(images) == 1, name
        _decode_png(images[0])
    assert "feedbeef0001" in metadata["quarantine"].md_str
    assert "2024-03-03 | quarantined" in metadata["summary"].md_str


# --- CLI --------------------------------------------------------------------------------------


def _freshrank(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "freshrank", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_cli_report_writes_page(records_home):
    result = _freshrank(records_home.home, "report", "--dpi", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {records_home.home / 'reports' / 'report.html'}" in result.stdout
    assert "latest day 2024-03-06: not run" in result.stdout
    assert len(_data_uri_images((records_home.home / "reports" / "report.html").read_text())) == len(PLOT_TITLES)


def test_cli_report_empty_home(tmp_path):
    result = _freshrank(tmp_path / "empty", "report")
    assert result.returncode == 2
    assert "has no landed or processed day" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_report_bad_day(records_home):
    result = _freshrank(records_home.home, "report", "--until", "2024-02-30")
    assert result.returncode == 2
    assert "'2024-02-30' is not a day" in result.stdout + result.stderr

