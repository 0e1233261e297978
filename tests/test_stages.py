"""A day as concurrent branch runs: the split, and the same results as one run of the day."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, RunsFilter

from freshrank.config import GateConfig, OrchestrationConfig, load_settings, save_settings
from freshrank.feature_store import model_feature_names
from freshrank.importers.landing import write_day
from freshrank.records import read_record
from freshrank.synthetic import ShopSpec, generate_day
from freshrank.training_rows import read_training_rows
from freshrank.warehouse import published_rows
from models.policy import registry_for
from models.training import predict
from orchestration.build import build_definitions
from orchestration.replay import BRANCH_TAG, branches_may_overlap, dagster_instance, replay
from orchestration.stages import day_stages

SHOP = ShopSpec(days=3, users=200, items=60, seed=8, events_per_day=2500)
VIEWS = {"user_features", "item_features", "user_item_features", "user_category_features"}


def _names(stages) -> list[list[tuple[str, set[str]]]]:
    return [[(branch.name, {key.to_user_string() for key in branch.assets}) for branch in stage] for stage in stages]


def test_stages_of_whole_day(tmp_path):
    defs = build_definitions(load_settings(tmp_path / "home"))
    assert _names(day_stages(defs)) == [
        [("ingest", {"increment", "events"})],
        [
            ("online", VIEWS | {"online_features"}),
            ("model", {"training_rows", "prequential_evaluation", "challenger_model"}),
        ],
        [("deploy", {"deployment", "prediction_drift", "shadow_full_retrain", "daily_report"})],
    ]


def test_blocking_drift_joins_model_branch(tmp_path):
    settings = load_settings(tmp_path / "home")
    settings = settings.model_copy(update={"gate": GateConfig(block_on_drift=True)})
    stages = _names(day_stages(build_definitions(settings)))
    assert stages[1][1] == ("model", {"training_rows", "prequential_evaluation", "challenger_model", "prediction_drift"})
    assert stages[2] == [("deploy", {"deployment", "shadow_full_retrain", "daily_report"})]


def test_stages_of_selection(tmp_path):
    defs = build_definitions(load_settings(tmp_path / "home"))
    selection = [AssetKey("training_rows"), AssetKey("challenger_model"), AssetKey("deployment")]
    assert _names(day_stages(defs, selection)) == [
        [("model", {"training_rows", "challenger_model"})],
        [("deploy", {"deployment"})],
    ]


def _replayed_home(root, concurrent: bool):
    settings = load_settings(root / "home")
    save_settings(settings.model_copy(update={"orchestration": OrchestrationConfig(concurrent_branches=concurrent)}))
    settings = load_settings(settings.home)
    for index in range(SHOP.days):
        write_day(settings.landing_dir, SHOP.day(index).isoformat(), generate_day(SHOP, index))
    runs = replay(settings, [SHOP.day(index) for index in range(SHOP.days)])
    assert [run.day for run in runs if not run.success] == []
    return settings, runs


@pytest.fixture(scope="module")
def both_homes(tmp_path_factory):
    return _replayed_home(tmp_path_factory.mktemp("concurrent"), True), _replayed_home(tmp_path_factory.mktemp("serial"), False)


def test_day_is_four_tagged_runs(both_homes):
    (concurrent, runs), (serial, serial_runs) = both_homes
    assert [len(run.run_ids) for run in serial_runs] == [1, 1, 1]
    # The first day runs its branches one after the other (no feature partition to join yet).
    assert [len(run.run_ids) for run in runs] == [4, 4, 4]
    instance = dagster_instance(concurrent)
    day = SHOP.day(2).isoformat()
    records = instance.get_run_records(RunsFilter(tags={"dagster/partition": day}))
    assert sorted(record.dagster_run.tags[BRANCH_TAG] for record in records) == ["deploy", "ingest", "model", "online"]
    assert set(runs[2].materialized) == set(serial_runs[2].materialized)


def test_branches_match_single_run(both_homes):
    (concurrent, _), (serial, _) = both_homes
    days = [SHOP.day(index) for index in range(SHOP.days)]
    pd.testing.assert_frame_equal(read_training_rows(concurrent, days), read_training_rows(serial, days))

    champions = [registry_for(settings) for settings in (concurrent, serial)]
    boosters = [registry.load(registry.champion()) for registry in champions]
    assert boosters[0].num_boosted_rounds() == boosters[1].num_boosted_rounds()
    rows = read_training_rows(serial, days)
    columns = model_feature_names(serial)
    np.testing.assert_allclose(predict(boosters[0], rows, columns), predict(boosters[1], rows, columns), atol=1e-6)
    for day in days:
        first, second = (read_record(s, "online_features", day) for s in (concurrent, serial))
        assert first["write_mode"] == second["write_mode"]
        # DuckDB's parallel float sums can differ in the last bit between runs, and such rows
        # count as changed in a diff write, so the counts may differ by a few rows.
        assert abs(first["rows_written"] - second["rows_written"]) <= 0.01 * second["rows_written"]
        assert first["probe_mismatches"] == 0
        assert read_record(concurrent, "deployment", day)["deploy"] == read_record(serial, "deployment", day)["deploy"]


def test_failed_branch_skips_deploy(tmp_path):
    settings = load_settings(tmp_path / "home")
    for index in range(2):
        write_day(settings.landing_dir, SHOP.day(index).isoformat(), generate_day(SHOP, index))
    assert replay(settings, [SHOP.day(0)])[0].success
    # An unreadable registry file fails the challenger; the online branch still completes.
    registry = registry_for(settings)
    (registry.root / "champion.json").write_text("{not json")
    run = replay(settings, [SHOP.day(1)])[0]
    assert not run.success
    assert "online_features" in run.materialized
    assert "deployment" not in run.materialized
    assert read_record(settings, "deployment", date.fromisoformat(SHOP.day(1).isoformat())) is None


def test_large_day_runs_branches_in_turn(both_homes):
    (concurrent, _), _ = both_homes
    day = SHOP.day(2)
    events = published_rows(concurrent.warehouse_path, day)
    assert events > 0

    def with_limit(limit: int):
        orchestration = concurrent.orchestration.model_copy(update={"concurrent_branches_max_events": limit})
        return concurrent.model_copy(update={"orchestration": orchestration})

    assert branches_may_overlap(with_limit(events), day)
    assert not branches_may_overlap(with_limit(events - 1), day)
    # A day not published yet (its ingest run comes first) is no reason to run in turn.
    assert branches_may_overlap(with_limit(0), date(2030, 1, 1))


def test_first_day_runs_branches_in_turn(tmp_path):
    assert not branches_may_overlap(load_settings(tmp_path / "home"), SHOP.day(0))
