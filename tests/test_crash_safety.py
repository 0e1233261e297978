"""Crash safety: a run killed at each injected crash point, then run again, leaves the state of an uninterrupted run.

A subprocess runs the daily loop for one day with ``FRESHRANK_CRASH_AT`` naming a crash point
and dies there by ``os._exit`` (like ``kill -9``). The test then runs the day again in its own
process and compares warehouse tables, online store rows, feature and training Parquet bytes,
model bytes and the champion with a home where the same day ran without interruption.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from freshrank.alerts import DATA_QUALITY, read_alerts
from freshrank.config import Settings, load_settings, save_settings
from freshrank.faults import (
    CRASH_AT_ENV_VAR,
    CRASH_EXIT_CODE,
    CRASH_MESSAGE_PREFIX,
    CRASH_MODE_ENV_VAR,
    CRASH_POINTS,
    InjectedCrash,
    crash_point,
    reset_hits,
)
from freshrank.increments import landed_days
from freshrank.staging import QUARANTINE_RECORD, list_quarantined
from freshrank.synthetic import ShopSpec, generate_shop
from models.registry import ModelRegistry
from orchestration.replay import dagster_instance, replay, run_day
from tests.home_state import HomeState, home_state

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 1, 3)
BASE_DAYS = 2
RUN_DAY_SCRIPT = """
import sys
from datetime import date
from freshrank.config import load_settings
from orchestration.replay import dagster_instance, run_day
settings = load_settings(sys.argv[1])
run = run_day(settings, date.fromisoformat(sys.argv[2]), dagster_instance(settings))
sys.exit(0 if run.success else 1)
"""


def light_settings(home: Path) -> Settings:
    """Settings of a small, fast home: few trees per model."""
    settings = load_settings(home)
    training = settings.training.model_copy(update={"full_train_trees": 30, "trees_per_day": 3})
    save_settings(settings.model_copy(update={"training": training}))
    return load_settings(home)


@dataclass(frozen=True)
class Homes:
    """A home with BASE_DAYS published days and DAY landed, and the state after DAY ran uninterrupted."""

    base: Path
    reference: HomeState


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> Homes:
    root = tmp_path_factory.mktemp("crash")
    settings = light_settings(root / "base")
    generate_shop(settings.landing_dir, ShopSpec(days=BASE_DAYS + 1, users=200, items=60, seed=11))
    days = landed_days(settings.landing_dir)
    runs = replay(settings, days[:BASE_DAYS])
    assert [run.success for run in runs] == [True] * BASE_DAYS
    reference = copy_home(settings.home, root / "reference")
    assert run_day(reference, DAY, dagster_instance(reference)).success
    return Homes(settings.home, home_state(reference))


def copy_home(source: Path, target: Path) -> Settings:
    shutil.copytree(source, target, symlinks=True)
    return load_settings(target)


def run_in_subprocess(home: Path, crash_at: str) -> subprocess.CompletedProcess:
    """Run the day in a new process that ends with ``os._exit`` at ``crash_at``."""
    environment = {**os.environ, CRASH_AT_ENV_VAR: crash_at, CRASH_MODE_ENV_VAR: "exit"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", RUN_DAY_SCRIPT, str(home), DAY.isoformat()],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_same_state(actual: HomeState, expected: HomeState) -> None:
    assert actual.warehouse == expected.warehouse
    assert actual.online == expected.online
    assert actual.offline == expected.offline
    assert actual.training_rows == expected.training_rows
    assert actual.champion == expected.champion
    assert actual.champion_model == expected.champion_model
    assert actual.models == expected.models


def leftover_temporary_files(home: Path) -> list[str]:
    return sorted(str(path.relative_to(home)) for path in home.rglob("*.tmp") if "dagster" not in path.parts)


CRASH_SEQUENCE = (
    "staging.before_replace",
    "warehouse.after_delete",
    "warehouse.before_commit",
    "features.before_replace:3",
    "feature_store.after_materialize",
    "lifecycle.before_register",
)
"""Crash points in the order a day reaches them; ``:3`` is the third feature view, after two were replaced."""


def test_reruns_after_crashes_equal_uninterrupted(homes: Homes, tmp_path: Path) -> None:
    """Each run dies at the next crash point, so every run after the first is a rerun after a kill.

    After a crash inside the publish transaction nothing of the day is in the warehouse, and
    after a crash in the feature step every Parquet file in place is complete. The last,
    uninterrupted rerun must reach the state of a run that was never killed.
    """
    settings = copy_home(homes.base, tmp_path / "home")
    base_warehouse = home_state(settings).warehouse

    for crash_at in CRASH_SEQUENCE:
        crashed = run_in_subprocess(settings.home, crash_at)
        assert crashed.returncode == CRASH_EXIT_CODE, (crash_at, crashed.stderr[-3000:])
        assert f"{CRASH_MESSAGE_PREFIX}{crash_at.split(':')[0]}" in crashed.stderr
        if crash_at.startswith("warehouse."):
            assert home_state(settings).warehouse == base_warehouse, crash_at
        for path in settings.offline_dir.rglob("*.parquet"):
            pq.read_metadata(path)
    rerun = run_day(settings, DAY, dagster_instance(settings))

    assert rerun.success
    assert_same_state(home_state(settings), homes.reference)
    assert leftover_temporary_files(settings.home) == []


# A crash after the champion pointer moved leaves the day's own model as champion. The rerun
# must still train from and compare with the champion as of the start of the day
# (ModelRegistry.champion_for), register the same bytes as the same version, and record the
# deployment event the crash cut off.
def test_rerun_after_crash_after_pointer(homes: Homes, tmp_path: Path) -> None:
    settings = copy_home(homes.base, tmp_path / "home")

    crashed = run_in_subprocess(settings.home, "registry.after_pointer")
    rerun = run_day(settings, DAY, dagster_instance(settings))

    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-3000:]
    assert rerun.success
    state = home_state(settings)
    assert state.warehouse == homes.reference.warehouse
    assert state.online == homes.reference.online
    assert state.models == homes.reference.models
    assert state.champion == homes.reference.champion
    assert state.champion_model == homes.reference.champion_model
    registry = ModelRegistry(settings.registry_dir)
    deployed = [event["version"] for event in registry.history() if event["kind"] == "deploy"]
    assert deployed[-1] == state.champion
    assert deployed.count(state.champion) == 1


def test_crash_during_quarantine_completes_on_rerun(homes: Homes, tmp_path: Path) -> None:
    settings = copy_home(homes.base, tmp_path / "home")
    landing_file = settings.landing_dir / DAY.isoformat() / "events.parquet"
    landing_file.write_bytes(landing_file.read_bytes()[:500])

    crashed = run_in_subprocess(settings.home, "quality.after_quarantine")
    alerts_after_crash = read_alerts(settings, kind=DATA_QUALITY)
    rerun = run_day(settings, DAY, dagster_instance(settings))

    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-3000:]
    assert alerts_after_crash == []
    assert rerun.check_passed is False
    entries = list_quarantined(settings, DAY)
    assert len(entries) == 1
    assert (entries[0].folder / QUARANTINE_RECORD).exists()
    assert (entries[0].folder / "events.parquet").read_bytes() == landing_file.read_bytes()
    assert len(read_alerts(settings, kind=DATA_QUALITY)) == 1


# --- The crash points themselves ------------------------------------------------------------


def test_crash_point_inactive_without_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_AT_ENV_VAR, raising=False)
    for name in CRASH_POINTS:
        crash_point(name)


def test_unknown_crash_point_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_AT_ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="unknown crash point 'warehouse.nowhere'"):
        crash_point("warehouse.nowhere")


def test_unknown_variable_value_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_AT_ENV_VAR, "warehouse.befor_commit")
    with pytest.raises(ValueError, match="names no crash point; known points: .*warehouse.before_commit"):
        crash_point("warehouse.after_delete")


def test_raise_mode_fires_on_named_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_AT_ENV_VAR, "features.before_replace:2")
    monkeypatch.setenv(CRASH_MODE_ENV_VAR, "raise")
    reset_hits()
    crash_point("features.before_replace")
    crash_point("warehouse.after_delete")
    with pytest.raises(InjectedCrash, match="features.before_replace"):
        crash_point("features.before_replace")
    reset_hits()


def test_every_crash_point_in_code() -> None:
    sources = "\n".join(path.read_text() for folder in ("freshrank", "models") for path in (REPO_ROOT / folder).rglob("*.py"))
    for name in CRASH_POINTS:
        assert f'crash_point("{name}")' in sources, name
