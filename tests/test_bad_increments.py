"""Bad increments through the daily loop: each corpus kind is quarantined with its cause, or accepted with counted repairs.

One small home with three published days is built per module and copied per case. A rejected
kind runs through the real Dagster job, and afterwards the warehouse, the online store, the
Parquet files and the deployed model must be exactly as before. An accepted kind runs through the staging,
validation and publishing functions that ``freshrank ingest`` and the job share.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import build_sensor_context
from typer.testing import CliRunner

import freshrank.increments
import freshrank.quality
from freshrank.alerts import CHECK_FAILED, DATA_QUALITY, DRIFT, RELEASED, read_alerts
from freshrank.cli import app
from freshrank.commands.quarantine import entry_state, published_versions
from freshrank.config import Settings, load_settings, save_settings
from freshrank.errors import FreshrankError, QuarantineError
from freshrank.increments import landed_days
from freshrank.quality import release_increment, validate_staged
from freshrank.staging import QUARANTINE_RECORD, list_quarantined, load_staged, stage_increment
from freshrank.synthetic import ShopSpec, generate_shop
from freshrank.warehouse import partition_rows, publish_increment
from orchestration.alert_sensor import build_alert_sensor
from orchestration.build import build_definitions
from orchestration.replay import dagster_instance, replay, run_day
from tests.bad_increments import (
    ACCEPTED,
    CHANGE_DURING_READ,
    CLOCK_AT_NOON,
    KINDS,
    KINDS_BY_NAME,
    QUARANTINED,
    BadKind,
    write_kind,
)
from tests.home_state import HomeState, home_state

DAY = date(2024, 1, 4)
BASE_DAYS = 3
PARTITION_COUNTS = ("rows_in", "rows_published", "duplicates_dropped", "returns_set_aside", "rows_without_user")


@dataclass(frozen=True)
class Base:
    """A home with BASE_DAYS published days, the good events of DAY (not landed), and its state."""

    home: Path
    frame: pd.DataFrame
    state: HomeState


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    settings = light_settings(tmp_path_factory.mktemp("bad_base") / "home")
    generate_shop(settings.landing_dir, ShopSpec(days=BASE_DAYS + 1, users=200, items=60, seed=3))
    day_folder = settings.landing_dir / DAY.isoformat()
    frame = pd.read_parquet(day_folder / "events.parquet")
    shutil.rmtree(day_folder)
    runs = replay(settings, landed_days(settings.landing_dir))
    assert [run.success for run in runs] == [True] * BASE_DAYS, [(run.day, run.materialized) for run in runs]
    return Base(settings.home, frame, home_state(settings))


def light_settings(home: Path) -> Settings:
    """Settings of a small, fast home: few trees per model."""
    settings = load_settings(home)
    training = settings.training.model_copy(update={"full_train_trees": 30, "trees_per_day": 3})
    save_settings(settings.model_copy(update={"training": training}))
    return load_settings(home)


def copy_home(base: Base, tmp_path: Path) -> Settings:
    target = tmp_path / "case" / "home"
    shutil.copytree(base.home, target, symlinks=True)
    return load_settings(target)


def apply_hook(kind: BadKind, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set up what a kind needs at run time: a writer appending during the read, or a fixed clock."""
    if kind.hook == CHANGE_DURING_READ:
        original = freshrank.increments._read_all
        appended = []

        def read_then_append(descriptor: int) -> bytes:
            data = original(descriptor)
            if not appended:
                target = next((settings.landing_dir / DAY.isoformat()).iterdir())
                with target.open("ab") as handle:
                    handle.write(b"2024-01-05T23:59:00Z,u-late,i-late,view,1,1.0,c01,s-late\n")
                appended.append(target)
            return data

        monkeypatch.setattr(freshrank.increments, "_read_all", read_then_append)
    elif kind.hook == CLOCK_AT_NOON:
        noon = datetime.combine(DAY, datetime.min.time(), tzinfo=timezone.utc).replace(hour=12)
        monkeypatch.setattr(freshrank.quality, "validation_clock", lambda: noon)


def only_quarantine(settings: Settings) -> Path:
    entries = list_quarantined(settings, DAY)
    assert len(entries) == 1, [entry.folder for entry in entries]
    assert entries[0].complete
    return entries[0].folder


def failed_checks(folder: Path) -> list[str]:
    report = json.loads((folder / "validation.json").read_text())
    return [outcome["expectation"] for outcome in report["outcomes"] if not outcome["success"]]


def assert_originals_kept(settings: Settings, folder: Path) -> None:
    """Every landing file inside the landing folder has a byte-identical copy; no outside file is copied."""
    record = json.loads((folder / QUARANTINE_RECORD).read_text())
    copies = {Path(entry["file"]).name: folder / entry["copy"] for entry in record["copies"]}
    landing_root = settings.landing_dir.resolve()
    for path in (settings.landing_dir / DAY.isoformat()).iterdir():
        if path.resolve().is_relative_to(landing_root):
            assert copies[path.name].read_bytes() == path.read_bytes(), path.name
        else:
            assert path.name not in copies, path.name
            assert [entry["file"] for entry in record["not_copied"]] == [str(path)]
            secret = path.resolve().read_bytes()
            assert all(copy.read_bytes() != secret for copy in folder.iterdir() if copy.is_file())


QUARANTINED_KINDS = [kind for kind in KINDS if kind.outcome == QUARANTINED]
ACCEPTED_KINDS = [kind for kind in KINDS if kind.outcome == ACCEPTED]


def test_corpus_has_thirty_kinds():
    assert len(KINDS) >= 30
    assert len({kind.name for kind in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", QUARANTINED_KINDS, ids=lambda kind: kind.name)
def test_kind_quarantined(kind: BadKind, base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(kind, settings.landing_dir, DAY, base.frame)
    apply_hook(kind, settings, monkeypatch)

    run = run_day(settings, DAY, dagster_instance(settings))

    assert run.check_passed is False
    assert run.materialized == ("increment",)
    folder = only_quarantine(settings)
    assert kind.failed_check in failed_checks(folder)
    summary = (folder / "validation.md").read_text()
    alerts = read_alerts(settings, kind=DATA_QUALITY, day=DAY.isoformat())
    assert len(alerts) == 1
    for cause in kind.cause:
        assert cause in summary
        assert cause in alerts[0]["message"]
    assert_originals_kept(settings, folder)
    assert home_state(settings) == base.state


@pytest.mark.parametrize("kind", ACCEPTED_KINDS, ids=lambda kind: kind.name)
def test_kind_accepted(kind: BadKind, base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    expected = write_kind(kind, settings.landing_dir, DAY, base.frame)

    staged = stage_increment(settings, DAY)
    outcome = validate_staged(settings, DAY)
    assert outcome.result.success, outcome.result.to_markdown()
    report = publish_increment(settings.warehouse_path, load_staged(settings, DAY), settings.timezone)

    counts = {**staged.cleaning, **{name: getattr(report, name) for name in PARTITION_COUNTS}}
    for name, value in expected.items():
        assert counts.get(name, 0) == value, name
    for name in staged.cleaning:
        assert name in expected, f"unexpected repair {name}"
    if staged.cleaning:
        assert "Repairs made while reading" in outcome.result.to_markdown()
    assert list_quarantined(settings) == []
    assert read_alerts(settings, kind=DATA_QUALITY) == []
    stored = stored_ids(settings, kind.ids)
    assert stored == set(kind.ids)


def stored_ids(settings: Settings, ids: tuple[str, ...]) -> set[str]:
    if not ids:
        return set()
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT user_id FROM events WHERE user_id IN (SELECT unnest(?::VARCHAR[])) "
            "UNION SELECT item_id FROM events WHERE item_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(ids), list(ids)],
        ).fetchall()
    finally:
        con.close()
    return {row[0] for row in rows}


def test_fixed_delivery_published(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["unknown_event_type"], settings.landing_dir, DAY, base.frame)
    instance = dagster_instance(settings)
    first = run_day(settings, DAY, instance)
    rejected = only_quarantine(settings)
    shutil.rmtree(settings.landing_dir / DAY.isoformat())
    write_kind(KINDS_BY_NAME["odd_file_names"], settings.landing_dir, DAY, base.frame)

    second = run_day(settings, DAY, instance)

    assert first.check_passed is False
    assert second.success
    assert "deployment" in second.materialized
    published = partition_rows(settings.warehouse_path).set_index("event_day").loc[pd.Timestamp(DAY)]
    assert published["rows_published"] == len(base.frame)
    assert published["data_version"] != rejected.name
    assert (rejected / "validation.md").exists()
    assert home_state(settings).champion != base.state.champion
    (entry,) = list_quarantined(settings)
    state = entry_state(entry, published_versions(settings)[DAY.isoformat()])
    assert state == f"superseded: version {published['data_version']} is published"


def test_release_honoured_by_validation(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["single_user_bot"], settings.landing_dir, DAY, base.frame)
    runner = CliRunner()
    home = ["--home", str(settings.home)]

    rejected = runner.invoke(app, ["ingest", "--day", DAY.isoformat(), *home])
    listed = runner.invoke(app, ["quarantine", "list", *home])
    shown = runner.invoke(app, ["quarantine", "show", DAY.isoformat(), *home])
    released = runner.invoke(app, ["quarantine", "release", DAY.isoformat(), "--reason", "load test by the shop, reviewed", *home])
    published = runner.invoke(app, ["ingest", "--day", DAY.isoformat(), *home])

    assert isinstance(rejected.exception, FreshrankError)
    assert listed.exit_code == 0
    assert "top_user_share" in listed.output
    assert shown.exit_code == 0
    assert "crawler-0001" in shown.output
    assert released.exit_code == 0, released.output
    release = json.loads((only_quarantine(settings) / "release.json").read_text())
    assert release["reason"] == "load test by the shop, reviewed"
    assert release["failed_checks"] == ["top_user_share"]
    assert published.exit_code == 0, published.output
    row = partition_rows(settings.warehouse_path).set_index("event_day").loc[pd.Timestamp(DAY)]
    assert row["rows_published"] == len(base.frame)
    report = (settings.reports_dir / "validation" / DAY.isoformat() / "validation.md").read_text()
    assert "released for publishing" in report
    assert len(read_alerts(settings, kind=DATA_QUALITY)) == 1
    assert len(read_alerts(settings, kind=RELEASED)) == 1


def test_release_refused_for_enforced_check(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["unknown_event_type"], settings.landing_dir, DAY, base.frame)
    stage_increment(settings, DAY)
    validate_staged(settings, DAY)

    with pytest.raises(QuarantineError, match="event_type_known are enforced again when publishing"):
        release_increment(settings, DAY, "looks fine")
    assert not (only_quarantine(settings) / "release.json").exists()


def test_release_refused_for_unreadable(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["truncated_parquet"], settings.landing_dir, DAY, base.frame)
    stage_increment(settings, DAY)
    validate_staged(settings, DAY)

    with pytest.raises(QuarantineError, match="files could not be read"):
        release_increment(settings, DAY, "looks fine")


def test_release_needs_reason(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    with pytest.raises(QuarantineError, match="needs a reason"):
        release_increment(settings, DAY, "  ")


def test_quarantined_day_not_publishable(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["volume_spike"], settings.landing_dir, DAY, base.frame)
    stage_increment(settings, DAY)
    validate_staged(settings, DAY)

    with pytest.raises(FreshrankError, match="failed validation and is quarantined"):
        load_staged(settings, DAY)


def test_ingest_quarantines_unreadable(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["truncated_parquet"], settings.landing_dir, DAY, base.frame)

    result = CliRunner().invoke(app, ["ingest", "--day", DAY.isoformat(), "--home", str(settings.home)])

    assert isinstance(result.exception, FreshrankError)
    assert "quarantined" in str(result.exception)
    assert "magic bytes PAR1" in result.output
    assert failed_checks(only_quarantine(settings)) == ["files_readable"]
    assert len(read_alerts(settings, kind=DATA_QUALITY)) == 1
    assert home_state(settings) == base.state


def test_rerun_raises_one_alert(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["negative_price"], settings.landing_dir, DAY, base.frame)
    instance = dagster_instance(settings)
    run_day(settings, DAY, instance)
    run_day(settings, DAY, instance)

    assert len(read_alerts(settings, kind=DATA_QUALITY)) == 1
    assert len(list_quarantined(settings, DAY)) == 1


def test_alerts_command_shows_all(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["negative_price"], settings.landing_dir, DAY, base.frame)
    stage_increment(settings, DAY)
    validate_staged(settings, DAY)
    runner = CliRunner()
    home = ["--home", str(settings.home)]

    listed = runner.invoke(app, ["alerts", "--details", *home])
    everything = runner.invoke(app, ["alerts", "--json", *home])
    quality = runner.invoke(app, ["alerts", "--json", "--kind", DATA_QUALITY, *home])

    assert listed.exit_code == 0
    assert "price_not_negative" in listed.output
    assert [json.loads(line) for line in everything.output.splitlines()] == read_alerts(settings)
    records = [json.loads(line) for line in quality.output.splitlines()]
    assert [record["day"] for record in records] == [DAY.isoformat()]
    assert records[0]["details"]["failed"] == ["price_not_negative"]


def test_sensor_turns_check_failure_into_alert(base: Base, tmp_path: Path) -> None:
    settings = copy_home(base, tmp_path)
    write_kind(KINDS_BY_NAME["zero_quantity"], settings.landing_dir, DAY, base.frame)
    instance = dagster_instance(settings)
    run_day(settings, DAY, instance)
    # Without the alert the check step raised, only the sensor can report the failure.
    (settings.home / "alerts.jsonl").unlink()
    sensor = build_alert_sensor(settings)
    definitions = build_definitions(settings)

    first = build_sensor_context(instance=instance, cursor=None, definitions=definitions)
    sensor(first)
    after_first = read_alerts(settings)
    second = build_sensor_context(instance=instance, cursor=first.cursor, definitions=definitions)
    sensor(second)

    quality = [alert for alert in after_first if alert["kind"] == DATA_QUALITY]
    assert [alert["day"] for alert in quality] == [DAY.isoformat()]
    assert quality[0]["details"]["metadata"]["failed_expectations"] == 1
    assert [alert for alert in after_first if alert["kind"] == CHECK_FAILED] == []
    assert {alert["kind"] for alert in after_first} <= {DATA_QUALITY, DRIFT}
    assert read_alerts(settings) == after_first
    assert json.loads(second.cursor) == json.loads(first.cursor)
