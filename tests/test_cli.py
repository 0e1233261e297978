"""The `freshrank` command line, run as a real subprocess against a temporary home."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from freshrank.cli import EXIT_BLOCKED, EXIT_RUN_FAILED, run_exit_code
from freshrank.config import load_settings
from freshrank.warehouse import partition_rows
from orchestration.replay import DayRun


def freshrank(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "freshrank", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli_home")
    result = freshrank(home, "generate", "--days", "3", "--users", "80", "--items", "40", "--seed", "5")
    assert result.returncode == 0, result.stderr
    return home


def test_generate_writes_days(cli_home):
    days = sorted(path.name for path in (cli_home / "landing").iterdir() if path.is_dir())
    assert days == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_ingest_twice_same_table(cli_home):
    first = freshrank(cli_home, "ingest", "--day", "2024-01-01")
    assert first.returncode == 0, first.stdout + first.stderr
    before = partition_rows(load_settings(cli_home).warehouse_path).drop(columns=["published_at"])
    second = freshrank(cli_home, "ingest", "--day", "2024-01-01")
    assert second.returncode == 0, second.stdout + second.stderr
    after = partition_rows(load_settings(cli_home).warehouse_path).drop(columns=["published_at"])
    pd.testing.assert_frame_equal(before, after)


def test_features_round_trip(cli_home):
    assert freshrank(cli_home, "ingest", "--day", "2024-01-02").returncode == 0
    computed = freshrank(cli_home, "features", "compute", "--day", "2024-01-02")
    assert computed.returncode == 0, computed.stdout + computed.stderr
    materialized = freshrank(cli_home, "features", "materialize", "--day", "2024-01-02")
    assert materialized.returncode == 0, materialized.stdout + materialized.stderr
    assert "0 mismatches" in materialized.stdout
    offline = pd.read_parquet(cli_home / "offline" / "item_features" / "2024-01-02.parquet")
    item = offline.sort_values("i_views_28d").iloc[-1]
    shown = freshrank(cli_home, "features", "item", item["item_id"])
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["i_views_28d"] == item["i_views_28d"]
    pairs = pd.read_parquet(cli_home / "offline" / "user_category_features" / "2024-01-02.parquet")
    pair = pairs.sort_values(["uc_views_90d", "user_id", "category"]).iloc[-1]
    shown = freshrank(cli_home, "features", "category", pair["user_id"], pair["category"])
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["uc_views_90d"] == pair["uc_views_90d"]
    assert values["uc_days_since_last_event"] >= 0


def test_missing_day_one_line_error(cli_home):
    result = freshrank(cli_home, "ingest", "--day", "2023-05-05")
    assert result.returncode == 2
    assert "no increment for 2023-05-05" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_column_names_file(cli_home):
    folder = cli_home / "landing" / "2024-02-01"
    folder.mkdir()
    (folder / "broken.csv").write_text("event_time,user,item_id,event_type\n2024-02-01T10:00:00Z,u1,i1,view\n")
    result = freshrank(cli_home, "ingest", "--day", "2024-02-01")
    assert result.returncode == 2
    assert "broken.csv" in result.stdout
    assert "user_id" in result.stdout


def test_invalid_day_rejected(cli_home):
    result = freshrank(cli_home, "ingest", "--day", "yesterday")
    assert result.returncode == 2
    assert "YYYY-MM-DD" in result.stdout + result.stderr


def test_run_missing_day_one_line_error(tmp_path):
    result = freshrank(tmp_path / "home", "run", "--day", "2030-01-01")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no increment for 2030-01-01" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def _day_run(success: bool, check_passed: bool | None) -> DayRun:
    return DayRun("2024-01-01", ("run",), success, check_passed, (), {})


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([_day_run(True, True)], 0),
        ([_day_run(True, True), _day_run(False, False)], EXIT_BLOCKED),
        ([_day_run(False, False), _day_run(False, None)], EXIT_RUN_FAILED),
        ([_day_run(False, True)], EXIT_RUN_FAILED),
    ],
)
def test_run_exit_code_cases(runs, expected):
    assert run_exit_code(runs) == expected


def test_run_blocked_day_exit_status(tmp_path):
    home = tmp_path / "home"
    assert freshrank(home, "generate", "--days", "1", "--users", "40", "--items", "20", "--seed", "3").returncode == 0
    (increment,) = (home / "landing").glob("*/events.parquet")
    events = pd.read_parquet(increment)
    events["price"] = -1.0
    events.to_parquet(increment)
    result = freshrank(home, "run")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"1 day(s) blocked by validation: {increment.parent.name}" in result.stdout
    assert "price_not_negative" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    again = freshrank(home, "run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"stay quarantined until a corrected increment lands: {increment.parent.name}" in again.stdout
