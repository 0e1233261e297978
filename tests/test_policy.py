"""The model policy end to end: rebase triggers, shadow retrains, gate rejections, rollback and lineage."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from typer.testing import CliRunner

from freshrank.cli import app
from freshrank.config import GateConfig, Settings, TrainingConfig, load_settings, save_settings
from freshrank.importers.landing import write_day
from freshrank.increments import landed_days
from freshrank.records import read_record, write_record
from freshrank.synthetic import ShopSpec, generate_day
from freshrank.training_rows import read_training_rows, stored_training_days, write_training_rows
from freshrank.warehouse import connect
from models import lifecycle, policy, shadow
from models.lineage import describe_lineage
from models.training import continue_training, paired_group_difference, score_rows, split_holdout
from orchestration.deploy import deploy_day
from orchestration.replay import replay

SHOP = ShopSpec(days=8, users=300, items=100, seed=5, events_per_day=3000)
REPLAYED_DAYS = 7
"""Days run through the Dagster loop by the fixture; the eighth is landed by the tests that need a new day."""
POLICY = TrainingConfig(
    full_train_trees=20,
    trees_per_day=5,
    max_trees=30,
    continued_window_days=2,
    full_train_window_days=3,
    shadow_every_days=2,
    rebase_margin=1.0,
    holdout_share=0.5,
)
"""A policy that reaches its tree budget within the replay: 20 trees, then 25, 30, and a rebase.
A rebase margin of 1 keeps the degradation trigger off (a lead in NDCG@10 cannot pass 1)."""
LENIENT_GATE = GateConfig(tolerance=1.0)
"""Deploys every sane challenger, so the chain does not depend on noise in the tiny holdouts."""


def _day(index: int) -> date:
    return SHOP.day(index)


@pytest.fixture(scope="module")
def policy_home(tmp_path_factory) -> Settings:
    settings = load_settings(tmp_path_factory.mktemp("policy") / "home")
    save_settings(settings.model_copy(update={"training": POLICY, "gate": LENIENT_GATE}))
    settings = load_settings(settings.home)
    for index in range(REPLAYED_DAYS):
        write_day(settings.landing_dir, _day(index).isoformat(), generate_day(SHOP, index))
    runs = replay(settings, landed_days(settings.landing_dir))
    assert [run.day for run in runs if not run.success] == []
    return settings


@pytest.fixture()
def home_copy(policy_home: Settings, tmp_path: Path) -> Settings:
    """A private copy of the replayed home, for tests that change it."""
    target = tmp_path / "home"
    shutil.copytree(policy_home.home, target, symlinks=True)
    return load_settings(target)


def _challenger(settings: Settings, index: int) -> dict:
    return read_record(settings, "challenger_model", _day(index))


def test_chain_rebases_at_tree_budget(policy_home):
    kinds = [_challenger(policy_home, index)["kind"] for index in range(1, REPLAYED_DAYS)]
    trees = [_challenger(policy_home, index)["trees"] for index in range(1, REPLAYED_DAYS)]
    assert kinds == ["full", "continued", "continued", "full", "continued", "continued"]
    assert trees == [20, 25, 30, 20, 25, 30]


def test_continued_rounds_reuse_stored_margins(policy_home):
    # Day 3 continues day 2's model, whose round stored the margins of day 1's model.
    third_day = _challenger(policy_home, 3)["base_margins"]
    assert third_day["appended_trees"] == POLICY.trees_per_day
    assert third_day["stored_rows"] > 0
    assert third_day["stored_rows"] + third_day["predicted_rows"] == third_day["rows"] == _challenger(policy_home, 3)["training_rows"]
    # Day 5 continues the rebase of day 4, a full train that stored nothing.
    assert _challenger(policy_home, 5)["base_margins"]["stored_rows"] == 0
    assert _challenger(policy_home, 4)["base_margins"] is None
    stored = sorted(path.stem for path in (policy_home.home / "margins").glob("*.npz"))
    assert stored == _challenger(policy_home, 6)["training_days"]


def test_margin_counts_in_dagster(policy_home):
    instance = DagsterInstance.from_config(str(policy_home.dagster_home))
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("challenger_model"), asset_partitions=[_day(3).isoformat()]), limit=1
    )
    metadata = {key: value.value for key, value in found.records[0].asset_materialization.metadata.items()}
    record = _challenger(policy_home, 3)["base_margins"]
    assert metadata["margin_rows_stored"] == record["stored_rows"]
    assert metadata["margin_rows_predicted"] == record["predicted_rows"]
    assert metadata["margin_trees_appended"] == POLICY.trees_per_day


def test_budget_rebase_recorded(policy_home):
    record = _challenger(policy_home, 4)
    assert record["rebase"]["trigger"] == "tree_budget"
    assert record["rebase"]["replaces"] == _challenger(policy_home, 3)["version"]
    assert record["rebase"]["evidence"] == {"champion_trees": 30, "max_trees": 30}
    metadata = policy.registry_for(policy_home).metadata(record["version"])
    assert metadata["kind"] == "full"
    assert metadata["extra"]["rebase"]["trigger"] == "tree_budget"


def test_budget_rebase_deployed(policy_home):
    deployment = read_record(policy_home, "deployment", _day(4))
    assert deployment["deploy"] is True
    assert deployment["rebase_trigger"] == "tree_budget"
    assert deployment["champion"] == _challenger(policy_home, 4)["version"]


def test_lineage_ends_at_rebase(policy_home):
    champion = policy.registry_for(policy_home).champion()
    chain = describe_lineage(policy_home, champion)
    assert [record["version"] for record in chain] == [_challenger(policy_home, index)["version"] for index in (6, 5, 4)]
    assert chain[-1]["rebase"]["trigger"] == "tree_budget"
    assert [record["rebase"] for record in chain[:-1]] == [None, None]


def test_lineage_lists_exact_partitions(policy_home):
    registry = policy.registry_for(policy_home)
    with connect(policy_home.warehouse_path, read_only=True) as con:
        published = dict(con.execute("SELECT strftime(event_day, '%Y-%m-%d'), data_version FROM partitions").fetchall())
    for index in range(1, REPLAYED_DAYS):
        record = _challenger(policy_home, index)
        window = POLICY.full_train_window_days if record["kind"] == "full" else POLICY.continued_window_days
        expected = [d.isoformat() for d in stored_training_days(policy_home, _day(index), window - 1)] + [_day(index).isoformat()]
        chain = describe_lineage(policy_home, record["version"])
        partitions = chain[0]["training_partitions"]
        assert [partition["day"] for partition in partitions] == expected, record["version"]
        assert [partition["data_version"] for partition in partitions] == [published[day] for day in expected]
        assert [partition["day"] for partition in registry.metadata(record["version"])["training_partitions"]] == expected


def test_lineage_windows_have_expected_days(policy_home):
    continued = describe_lineage(policy_home, _challenger(policy_home, 5)["version"])[0]
    full = describe_lineage(policy_home, _challenger(policy_home, 4)["version"])[0]
    assert [partition["day"] for partition in continued["training_partitions"]] == [_day(4).isoformat(), _day(5).isoformat()]
    assert [partition["day"] for partition in full["training_partitions"]] == [_day(i).isoformat() for i in (2, 3, 4)]


def test_lineage_records_checks_and_reports(policy_home):
    champion = policy.registry_for(policy_home).champion()
    newest = describe_lineage(policy_home, champion)[0]
    for partition in newest["training_partitions"]:
        assert partition["validation"]["passed"] is True, partition
        assert Path(partition["validation"]["report"]).exists()
    gate_checks = {check["name"]: check["passed"] for check in newest["checks"]["gate"]["checks"]}
    assert gate_checks == {name: True for name in lifecycle.GATE_CHECKS}
    assert Path(newest["reports"]["prequential_evaluation"]).exists()
    assert Path(newest["reports"]["challenger_model"]).exists()
    assert newest["metrics"]["holdout"]["ndcg_at_10"] is not None


def test_lineage_cli_json_matches(policy_home):
    champion = policy.registry_for(policy_home).champion()
    result = CliRunner().invoke(app, ["lineage", champion, "--json", "--home", str(policy_home.home)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert [record["version"] for record in printed] == [record["version"] for record in describe_lineage(policy_home, champion)]


def test_lineage_cli_table_names_rebase(policy_home):
    champion = policy.registry_for(policy_home).champion()
    result = CliRunner().invoke(app, ["lineage", champion, "--home", str(policy_home.home)])
    assert result.exit_code == 0, result.output
    assert "tree_budget" in result.output
    assert _day(4).isoformat() in result.output


def test_shadow_runs_on_schedule(policy_home):
    due = {index: read_record(policy_home, shadow.SHADOW_STAGE, _day(index))["due"] for index in range(1, REPLAYED_DAYS)}
    # Day 1 trains the first model, and day 3 is two days after it. Day 4 is itself a full
    # train, and day 6 is two days after that rebase.
    assert due == {1: False, 2: False, 3: True, 4: False, 5: False, 6: True}
    assert shadow.ShadowStore.of(policy_home).days() == [_day(3).isoformat(), _day(6).isoformat()]


def test_shadow_not_due_reason(policy_home):
    record = read_record(policy_home, shadow.SHADOW_STAGE, _day(5))
    assert record["reason"].startswith("not due")
    assert _day(4).isoformat() in record["reason"]


def test_shadow_numbers_recorded(policy_home):
    record = read_record(policy_home, shadow.SHADOW_STAGE, _day(3))
    challenger = _challenger(policy_home, 3)
    assert record["trees"] == POLICY.full_train_trees
    assert record["training_days"] == [_day(i).isoformat() for i in (1, 2, 3)]
    assert record["challenger"] == challenger["version"]
    assert record["holdout_rows"] == challenger["holdout_rows"]
    assert record["shadow_holdout"]["ndcg_at_10"] is not None
    metric = record["shadow_holdout"]["ndcg_at_10"] - challenger["champion_holdout"]["ndcg_at_10"]
    assert record["lead_over_champion"] == pytest.approx(metric)


def test_shadow_added_to_deployed_lineage(policy_home):
    # The shadow runs after the deployment, then fills its lineage fields.
    registry = policy.registry_for(policy_home)
    for index, due in ((3, True), (5, False)):
        deployment = read_record(policy_home, "deployment", _day(index))
        assert deployment["deploy"] is True
        lineage = registry.metadata(deployment["challenger"])["lineage"]
        record = read_record(policy_home, shadow.SHADOW_STAGE, _day(index))
        assert record["due"] is due
        expected = record["shadow_holdout"] if due else None
        assert lineage["metrics"]["shadow_holdout"] == expected
        assert lineage["reports"]["shadow_full_retrain"].endswith(f"{_day(index).isoformat()}.json")


def test_drift_added_to_deployed_lineage(policy_home):
    # Drift that does not block runs after the deployment, then fills its lineage fields.
    registry = policy.registry_for(policy_home)
    deployment = read_record(policy_home, "deployment", _day(5))
    drift = read_record(policy_home, "prediction_drift", _day(5))
    lineage = registry.metadata(deployment["challenger"])["lineage"]
    assert drift["drift_share"] is not None
    assert lineage["metrics"]["drift_share"] == drift["drift_share"]
    assert lineage["reports"]["drift_html"] == drift["html_path"]


def test_shadow_metadata_in_dagster(policy_home):
    instance = DagsterInstance.from_config(str(policy_home.dagster_home))
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("shadow_full_retrain"), asset_partitions=[_day(3).isoformat()]), limit=1
    )
    metadata = {key: value.value for key, value in found.records[0].asset_materialization.metadata.items()}
    record = read_record(policy_home, shadow.SHADOW_STAGE, _day(3))
    assert metadata["due"] is True
    assert metadata["shadow_holdout_ndcg_at_10"] == pytest.approx(record["shadow_holdout"]["ndcg_at_10"])
    assert metadata["lead_over_champion"] == pytest.approx(record["lead_over_champion"])


def test_deployment_metadata_in_dagster(policy_home):
    instance = DagsterInstance.from_config(str(policy_home.dagster_home))
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("deployment"), asset_partitions=[_day(4).isoformat()]), limit=1
    )
    metadata = {key: value.value for key, value in found.records[0].asset_materialization.metadata.items()}
    assert metadata["rebase_trigger"] == "tree_budget"
    assert [check["name"] for check in metadata["checks"]] == list(lifecycle.GATE_CHECKS)
    assert _challenger(policy_home, 4)["version"] in metadata["champion_lineage"]
    assert "tree_budget" in metadata["champion_lineage"]


def test_shadow_scored_next_day(policy_home):
    record = read_record(policy_home, "prequential_evaluation", _day(4))
    assert record["shadow"]["day"] == _day(3).isoformat()
    lead = record["shadow"]["metrics"]["ndcg_at_10"] - record["champion_metrics"]["ndcg_at_10"]
    assert record["shadow"]["lead"] == pytest.approx(lead)


def _plant_shadow_lead(settings: Settings, day: date, shadow_day: date, lead: float) -> None:
    """Store a prequential record of ``day`` in which the shadow of ``shadow_day`` leads the champion by ``lead``."""
    record = read_record(settings, "prequential_evaluation", day)
    record["shadow"] = {"day": shadow_day.isoformat(), "metric": "ndcg_at_10", "metrics": {}, "lead": lead}
    write_record(settings, "prequential_evaluation", day, record)


def test_degradation_triggers_full_rebase(home_copy):
    day = _day(6)
    _plant_shadow_lead(home_copy, day, _day(5), 0.2)
    training = POLICY.model_copy(update={"rebase_margin": 0.05, "max_trees": 1000, "rebase_from_shadow": False})
    strict = home_copy.model_copy(update={"training": training})
    plan = policy.plan_challenger(strict, policy.registry_for(strict), day)
    assert plan.kind == "full"
    assert plan.rebase.trigger == "degradation"
    assert plan.rebase.evidence["mean_lead"] == pytest.approx(0.2)
    assert plan.rebase.evidence["shadow_day"] == _day(5).isoformat()
    assert plan.training_days == [_day(i) for i in (4, 5, 6)]


def test_degradation_within_margin_continues(home_copy):
    day = _day(6)
    _plant_shadow_lead(home_copy, day, _day(5), 0.04)
    strict = home_copy.model_copy(update={"training": POLICY.model_copy(update={"rebase_margin": 0.05, "max_trees": 1000})})
    plan = policy.plan_challenger(strict, policy.registry_for(strict), day)
    assert plan.kind == "continued"
    assert plan.rebase is None


def test_degradation_plans_shadow_promotion(home_copy):
    day = _day(6)
    _plant_shadow_lead(home_copy, day, _day(5), 0.2)
    strict = home_copy.model_copy(update={"training": POLICY.model_copy(update={"rebase_margin": 0.05, "max_trees": 1000})})
    plan = policy.plan_challenger(strict, policy.registry_for(strict), day)
    assert plan.kind == "continued"
    assert plan.promote_shadow == _day(5).isoformat()
    assert plan.training_days == [_day(5), _day(6)]


def test_degradation_ignores_shadow_before_rebase(home_copy):
    # The shadow of day 3 predates the rebase of day 4, so its lead on day 5 must not count.
    day = _day(5)
    record = read_record(home_copy, "prequential_evaluation", day)
    record["shadow"] = {"day": _day(3).isoformat(), "metric": "ndcg_at_10", "metrics": {}, "lead": 0.5}
    write_record(home_copy, "prequential_evaluation", day, record)
    strict = home_copy.model_copy(update={"training": POLICY.model_copy(update={"rebase_margin": 0.05})})
    assert policy.shadow_lead(strict, _day(4), day) is None


def test_schedule_triggers_rebase(policy_home):
    scheduled = policy_home.model_copy(update={"training": POLICY.model_copy(update={"rebase_every_days": 2, "max_trees": 1000})})
    registry = policy.registry_for(scheduled)
    rebase = policy.rebase_due(scheduled, registry, registry.champion(), _day(6))
    assert rebase.trigger == "schedule"
    assert rebase.evidence["age_days"] == 2


def _plant_inverted_labels(settings: Settings, day: date) -> None:
    """Invert the labels of the day's training users, leaving the holdout users as they are."""
    rows = read_training_rows(settings, [day])
    train, _ = split_holdout(rows, settings.training.holdout_share, settings.training.seed)
    rows.loc[train.index, "label"] = 1 - rows.loc[train.index, "label"]
    write_training_rows(settings, day, rows)


def test_planted_degradation_rejected(home_copy):
    day = _day(6)
    strict = home_copy.model_copy(
        update={
            "gate": GateConfig(tolerance=0.01),
            "training": POLICY.model_copy(update={"continued_window_days": 1, "continued_learning_rate": 1.0, "trees_per_day": 10, "max_trees": 100}),
        }
    )
    registry = policy.registry_for(strict)
    before = registry.champion()
    _plant_inverted_labels(strict, day)
    challenger = lifecycle.train_challenger(strict, day)
    write_record(strict, "challenger_model", day, challenger.to_dict())
    decision = deploy_day(strict, day)
    assert decision["deploy"] is False
    assert len(decision["reasons"]) == 1
    assert decision["reasons"][0].startswith("holdout ndcg_at_10")
    assert registry.champion() == before
    assert registry.metadata(challenger.version)["gate"]["reasons"] == decision["reasons"]
    assert read_record(strict, "deployment", day)["reasons"] == decision["reasons"]


def test_model_size_budget_rejects(policy_home):
    record = _challenger(policy_home, 6)
    challenger = lifecycle.ChallengerResult(**record)
    small = policy_home.model_copy(update={"gate": GateConfig(tolerance=1.0, max_model_bytes=1000)})
    decision = lifecycle.gate(small, challenger, None, np.array([0.1, 0.7]), True)
    assert not decision.deploy
    assert decision.reasons == [f"model size: {challenger.model_bytes} bytes is over the size budget 1000 (gate.max_model_bytes)"]


def test_rollback_then_new_day_continues(home_copy):
    registry = policy.registry_for(home_copy)
    rolled_back_from = registry.champion()
    target = registry.rollback(reason="test rollback")
    assert target == _challenger(home_copy, 5)["version"]
    assert registry.history()[-1]["kind"] == "rollback"

    new_day = _day(REPLAYED_DAYS)
    write_day(home_copy.landing_dir, new_day.isoformat(), generate_day(SHOP, REPLAYED_DAYS))
    runs = replay(home_copy, [new_day])
    assert runs[0].success
    record = read_record(home_copy, "challenger_model", new_day)
    assert record["kind"] == "continued"
    assert record["parent"] == target
    assert record["parent"] != rolled_back_from
    assert record["trees"] == registry.metadata(target)["tree_count"] + POLICY.trees_per_day
    # Day 6's round stored the margins of the rollback target, so none of its trees is evaluated again.
    assert record["base_margins"]["appended_trees"] == 0
    assert record["base_margins"]["stored_rows"] > 0
    chain = describe_lineage(home_copy, record["version"])
    assert [entry["version"] for entry in chain][1] == target


def _deploy_degraded_champion(settings: Settings, day: date) -> str:
    """Continue the champion on the day's rows with inverted labels at eta 1 and deploy the result."""
    registry = policy.registry_for(settings)
    champion = registry.champion()
    rows = read_training_rows(settings, [day]).assign(label=lambda frame: 1 - frame["label"])
    columns = registry.metadata(champion)["feature_columns"]
    degraded = continue_training(registry.load(champion), rows, columns, POLICY.model_copy(update={"continued_learning_rate": 1.0, "trees_per_day": 10}))
    version = registry.register(
        degraded,
        day=day.isoformat(),
        kind="continued",
        parent=champion,
        feature_columns=columns,
        training_partitions=policy.partition_versions(settings, [day.isoformat()]),
        params={"planted": "inverted labels"},
    )
    registry.deploy(version, reason="test: planted degraded champion")
    return version


def test_degraded_chain_rebases_from_shadow(home_copy):
    settings = home_copy.model_copy(update={"training": POLICY.model_copy(update={"rebase_margin": 0.05, "max_trees": 1000})})
    save_settings(settings)
    degraded = _deploy_degraded_champion(settings, _day(6))

    new_day = _day(REPLAYED_DAYS)
    write_day(settings.landing_dir, new_day.isoformat(), generate_day(SHOP, REPLAYED_DAYS))
    assert replay(settings, [new_day])[0].success

    prequential = read_record(settings, "prequential_evaluation", new_day)
    assert prequential["champion"] == degraded
    assert prequential["shadow"]["day"] == _day(6).isoformat()
    assert prequential["shadow"]["lead"] > 0.05
    record = read_record(settings, "challenger_model", new_day)
    assert record["kind"] == "continued"
    assert record["rebase"]["trigger"] == "degradation"
    promoted = policy.registry_for(settings).metadata(record["parent"])
    assert promoted["kind"] == "full"
    assert promoted["extra"]["promoted_shadow"] == _day(6).isoformat()
    assert promoted["extra"]["rebase"]["trigger"] == "degradation"
    assert record["trees"] == POLICY.full_train_trees + POLICY.trees_per_day
    chain = describe_lineage(settings, record["version"])
    assert [entry["version"] for entry in chain] == [record["version"], record["parent"]]
    assert chain[-1]["rebase"]["replaces"] == degraded
    assert read_record(settings, "deployment", new_day)["champion"] == record["version"]


def _paired(mean: float, error: float, groups: int = 40) -> lifecycle.ChallengerResult:
    result = lifecycle.ChallengerResult(day="2024-01-07", version="v0009-2024-01-07", kind="continued", parent="v0008-2024-01-06")
    result.challenger_holdout = {"ndcg_at_10": 0.50 + mean}
    result.champion_holdout = {"ndcg_at_10": 0.50}
    result.metric_comparison = {"metric": "ndcg_at_10", "groups": groups, "mean_difference": mean, "standard_error": error}
    return result


def test_gate_accepts_drop_within_noise(policy_home):
    decision = lifecycle.gate(policy_home.model_copy(update={"gate": GateConfig()}), _paired(-0.03, 0.03), None, np.array([0.1, 0.7]), True)
    metric_check = next(check for check in decision.checks if check["name"] == "metric")
    assert decision.deploy
    assert metric_check["observed"]["upper_bound"] == pytest.approx(-0.03 + 1.6448536 * 0.03)


def test_gate_rejects_confident_drop(policy_home):
    decision = lifecycle.gate(policy_home.model_copy(update={"gate": GateConfig()}), _paired(-0.05, 0.01), None, np.array([0.1, 0.7]), True)
    assert not decision.deploy
    assert "below the tolerance -0.01" in decision.reasons[0]


def test_gate_skips_single_group_holdout(policy_home):
    challenger = _paired(-0.3, 0.0, groups=1)
    challenger.metric_comparison["standard_error"] = None

    decision = lifecycle.gate(policy_home.model_copy(update={"gate": GateConfig()}), challenger, None, np.array([0.1, 0.7]), True)

    metric_check = next(check for check in decision.checks if check["name"] == "metric")
    assert decision.deploy
    assert metric_check["passed"] is None
    assert "1 query group" in metric_check["reason"]


def test_paired_difference_of_same_model(policy_home):
    registry = policy.registry_for(policy_home)
    model = registry.load(registry.champion())
    rows = read_training_rows(policy_home, [_day(6)])
    columns = registry.metadata(registry.champion())["feature_columns"]
    comparison = paired_group_difference(model, model, rows, columns, "ndcg_at_10", 0.5)
    assert comparison["mean_difference"] == 0.0
    assert comparison["standard_error"] == 0.0
    assert comparison["groups"] == int(rows.loc[rows["label"] == 1, "user_id"].nunique())


def test_paired_difference_matches_metrics(policy_home):
    registry = policy.registry_for(policy_home)
    champion = registry.champion()
    columns = registry.metadata(champion)["feature_columns"]
    rows = read_training_rows(policy_home, [_day(6)])
    first, second = registry.load(champion), registry.load(_challenger(policy_home, 4)["version"])
    comparison = paired_group_difference(first, second, rows, columns, "ndcg_at_10", 0.5)
    difference = score_rows(first, rows, columns, 0.5)["ndcg_at_10"] - score_rows(second, rows, columns, 0.5)["ndcg_at_10"]
    assert comparison["mean_difference"] == pytest.approx(difference)
