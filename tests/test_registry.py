"""Tests of models.registry: versions, metadata, champion pointer, rollback and lineage on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshrank.config import TrainingConfig
from freshrank.errors import ModelRegistryError
from models.registry import ModelRegistry
from models.training import continue_training, predict, train_full, training_params, tree_count

FEATURES = ["affinity", "price", "noise"]
CONFIG = TrainingConfig(full_train_trees=8, trees_per_day=3, max_depth=3, nthread=2, seed=7)


def make_rows(day: str, seed: int, n_users: int = 30, items: int = 10) -> pd.DataFrame:
    """Build rows of one day whose label follows affinity minus price, plus noise."""
    rng = np.random.default_rng(seed)
    size = n_users * items
    rows = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{index}" for index in range(n_users)], items),
            "item_id": np.tile([f"i{index}" for index in range(items)], n_users),
            "event_day": day,
            "affinity": rng.normal(size=size),
            "price": rng.normal(size=size),
            "noise": rng.normal(size=size),
        }
    )
    latent = 2.0 * rows["affinity"] - rows["price"] + rng.normal(scale=0.5, size=size)
    rows["label"] = (latent > np.quantile(latent, 0.8)).astype(int)
    return rows


@pytest.fixture(scope="module")
def day_one_rows() -> pd.DataFrame:
    return make_rows("2011-01-05", seed=0)


@pytest.fixture(scope="module")
def full_model(day_one_rows: pd.DataFrame):
    return train_full(day_one_rows, FEATURES, CONFIG)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _register_full(registry: ModelRegistry, booster, day: str = "2011-01-05", **kwargs) -> str:
    return registry.register(
        booster,
        day=day,
        kind="full",
        parent=kwargs.pop("parent", None),
        feature_columns=FEATURES,
        training_partitions=[{"day": day, "data_version": f"sha-{day}"}],
        params=training_params(CONFIG, learning_rate=CONFIG.learning_rate),
        **kwargs,
    )


def _register_continued(registry: ModelRegistry, booster, parent: str, day: str) -> str:
    return registry.register(
        booster,
        day=day,
        kind="continued",
        parent=parent,
        feature_columns=FEATURES,
        training_partitions=[{"day": day, "data_version": f"sha-{day}"}],
        params=training_params(CONFIG, learning_rate=CONFIG.continued_learning_rate),
    )


def _three_versions(registry: ModelRegistry, booster) -> list[str]:
    return [_register_full(registry, booster, day=day) for day in ("2011-01-05", "2011-01-06", "2011-01-07")]


# Register and load


def test_register_load_round_trip(registry: ModelRegistry, full_model, day_one_rows: pd.DataFrame) -> None:
    version = _register_full(registry, full_model, metrics={"ndcg_at_10": 0.8, "auc": np.float64(0.9)})

    loaded = registry.load(version)

    assert version == "v0001-2011-01-05"
    assert bytes(loaded.save_raw("ubj")) == bytes(full_model.save_raw("ubj"))
    np.testing.assert_array_equal(predict(loaded, day_one_rows, FEATURES), predict(full_model, day_one_rows, FEATURES))
    assert loaded.feature_names == FEATURES


def test_register_writes_metadata(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model, metrics={"auc": np.float64(0.9)}, extra={"note": "first"})

    record = registry.metadata(version)
    model_path = registry.root / "models" / version / "model.ubj"

    assert record["version"] == version
    assert record["number"] == 1
    assert record["day"] == "2011-01-05"
    assert record["kind"] == "full"
    assert record["parent"] is None
    assert record["feature_columns"] == FEATURES
    assert record["training_partitions"] == [{"day": "2011-01-05", "data_version": "sha-2011-01-05"}]
    assert record["params"]["eta"] == CONFIG.learning_rate
    assert record["metrics"] == {"auc": 0.9}
    assert record["extra"] == {"note": "first"}
    assert record["tree_count"] == CONFIG.full_train_trees
    assert record["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None


def test_versions_increase(registry: ModelRegistry, full_model) -> None:
    versions = _three_versions(registry, full_model)

    assert versions == ["v0001-2011-01-05", "v0002-2011-01-06", "v0003-2011-01-07"]
    assert registry.versions() == versions
    assert ModelRegistry(registry.root).versions() == versions


def test_versions_sort_by_number_past_9999(registry: ModelRegistry, full_model) -> None:
    first = _register_full(registry, full_model)
    models_dir = registry.root / "models"
    (models_dir / first).rename(models_dir / "v9999-2011-01-05")

    next_version = _register_full(registry, full_model, day="2011-01-06")

    assert next_version == "v10000-2011-01-06"
    assert registry.versions() == ["v9999-2011-01-05", "v10000-2011-01-06"]


def test_failed_register_leaves_no_version(registry: ModelRegistry, full_model) -> None:
    first = _register_full(registry, full_model)

    with pytest.raises(ModelRegistryError, match="cannot be written as JSON"):
        _register_full(registry, full_model, day="2011-01-06", metrics={"auc": float("nan")})

    assert registry.versions() == [first]
    assert sorted(path.name for path in (registry.root / "models").iterdir()) == [first]


def test_leftover_staging_folder_is_ignored(registry: ModelRegistry, full_model) -> None:
    first = _register_full(registry, full_model)
    # A writer killed mid-register leaves its staging folder behind, complete or not.
    shutil.copytree(registry.root / "models" / first, registry.root / "models" / ".tmp-deadbeef")

    second = _register_full(registry, full_model, day="2011-01-06")

    assert registry.versions() == [first, second]
    assert second == "v0002-2011-01-06"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"day": "05/01/2011"}, "YYYY-MM-DD"),
        ({"kind": "partial"}, r"one of \['full', 'continued'\]"),
        ({"kind": "continued", "parent": None}, "needs the parent"),
        ({"parent": "v0042-2011-01-01"}, "unknown model version 'v0042-2011-01-01'"),
        ({"feature_columns": ["price", "affinity", "noise"]}, "differ from the model's feature names"),
        ({"training_partitions": [{"day": "2011-01-05"}]}, r"is missing \['data_version'\]"),
        ({"params": {"eta": object()}}, "cannot be written as JSON"),
    ],
)
def test_register_rejects_invalid_arguments(
    registry: ModelRegistry, full_model, overrides: dict, message: str
) -> None:
    arguments = {
        "day": "2011-01-05",
        "kind": "full",
        "parent": None,
        "feature_columns": FEATURES,
        "training_partitions": [{"day": "2011-01-05", "data_version": "sha"}],
        "params": {"eta": 0.1},
    }
    arguments.update(overrides)

    with pytest.raises(ModelRegistryError, match=message):
        registry.register(full_model, **arguments)

    assert registry.versions() == []


def test_unknown_version_names_it_and_the_fix(registry: ModelRegistry, full_model) -> None:
    _register_full(registry, full_model)

    for call in (registry.metadata, registry.load, registry.lineage):
        with pytest.raises(ModelRegistryError, match=r"'v0009-2011-01-05'.*freshrank status"):
            call("v0009-2011-01-05")
    with pytest.raises(ModelRegistryError, match=r"'v0009-2011-01-05'.*freshrank status"):
        registry.deploy("v0009-2011-01-05", reason="test")


def test_load_detects_altered_model_file(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model)
    model_path = registry.root / "models" / version / "model.ubj"
    model_path.write_bytes(model_path.read_bytes() + b" ")

    with pytest.raises(ModelRegistryError, match="differs from the recorded"):
        registry.load(version)


# Metadata updates


def test_update_metadata_persists(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model)

    registry.update_metadata(version, gate={"decision": "deploy"}, drift={"share": 0.1})

    record = ModelRegistry(registry.root).metadata(version)
    assert record["gate"] == {"decision": "deploy"}
    assert record["drift"] == {"share": 0.1}
    assert record["tree_count"] == CONFIG.full_train_trees
    assert "updated_at" in record
    assert sorted(path.name for path in (registry.root / "models" / version).iterdir()) == [
        "metadata.json",
        "model.ubj",
    ]


def test_update_metadata_rejects_fixed_fields(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model)

    with pytest.raises(ModelRegistryError, match=r"cannot change \['model_sha256'\]"):
        registry.update_metadata(version, model_sha256="0" * 64)

    assert registry.metadata(version)["model_sha256"] != "0" * 64


# Champion, deployment and rollback


def test_empty_registry_has_no_champion(registry: ModelRegistry) -> None:
    assert registry.champion() is None
    assert registry.history() == []
    assert registry.versions() == []


def test_deploy_moves_champion_and_records_event(registry: ModelRegistry, full_model) -> None:
    first, second, _ = _three_versions(registry, full_model)

    registry.deploy(first, reason="first model", lineage={"partitions": ["2011-01-05"]})
    registry.deploy(second, reason="gate passed")

    history = registry.history()
    assert registry.champion() == second
    assert [event["version"] for event in history] == [first, second]
    assert [event["kind"] for event in history] == ["deploy", "deploy"]
    assert history[0]["previous"] is None
    assert history[1]["previous"] == first
    assert history[0]["lineage"] == {"partitions": ["2011-01-05"]}
    assert history[1]["reason"] == "gate passed"


def test_rollback_walks_back_through_champions(registry: ModelRegistry, full_model) -> None:
    first, second, third = _three_versions(registry, full_model)
    for version in (first, second, third):
        registry.deploy(version, reason="gate passed")

    assert registry.rollback(reason="bad metrics") == second
    assert registry.champion() == second
    assert registry.rollback() == first
    assert registry.champion() == first
    with pytest.raises(ModelRegistryError, match="nothing to roll back to"):
        registry.rollback()

    history = registry.history()
    assert [event["kind"] for event in history] == ["deploy", "deploy", "deploy", "rollback", "rollback"]
    assert history[3]["previous"] == third
    assert history[3]["reason"] == "bad metrics"
    assert history[4]["version"] == first


def test_rollback_to_named_version(registry: ModelRegistry, full_model) -> None:
    first, second, third = _three_versions(registry, full_model)
    for version in (first, second, third):
        registry.deploy(version, reason="gate passed")

    assert registry.rollback(first, reason="back to the full model") == first
    assert registry.champion() == first
    # A rolled-back-over version can be named again; then a plain rollback returns to first.
    assert registry.rollback(third) == third
    assert registry.rollback() == first


def test_rollback_rejects_invalid_targets(registry: ModelRegistry, full_model) -> None:
    first, second, third = _three_versions(registry, full_model)

    with pytest.raises(ModelRegistryError, match="no champion to roll back from"):
        registry.rollback()

    registry.deploy(first, reason="first")
    registry.deploy(second, reason="second")
    with pytest.raises(ModelRegistryError, match="already the champion"):
        registry.rollback(second)
    with pytest.raises(ModelRegistryError, match=f"{third} was never deployed"):
        registry.rollback(third)
    with pytest.raises(ModelRegistryError, match="unknown model version"):
        registry.rollback("v0077-2011-01-05")
    assert registry.champion() == second


def test_rollback_after_pointer_without_event(registry: ModelRegistry, full_model) -> None:
    first, second, _ = _three_versions(registry, full_model)
    registry.deploy(first, reason="first")
    registry.deploy(second, reason="second")
    # A writer stopped after the pointer moved and before its event was appended.
    history_path = registry.root / "deployments.jsonl"
    lines = history_path.read_text().splitlines()
    history_path.write_text(lines[0] + "\n")

    assert registry.rollback() == first


def test_champion_pointer_to_missing_version_raises(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model)
    registry.deploy(version, reason="first")
    shutil.rmtree(registry.root / "models" / version)

    with pytest.raises(ModelRegistryError, match="not a registered version"):
        registry.champion()


def test_damaged_history_line_names_it(registry: ModelRegistry, full_model) -> None:
    version = _register_full(registry, full_model)
    registry.deploy(version, reason="first")
    with open(registry.root / "deployments.jsonl", "a") as handle:
        handle.write("{not json\n")

    with pytest.raises(ModelRegistryError, match="deployments.jsonl, line 2"):
        registry.history()


def test_pointer_always_valid_json(registry: ModelRegistry, full_model) -> None:
    versions = _three_versions(registry, full_model)
    registry.deploy(versions[0], reason="start")
    pointer = registry.root / "champion.json"
    writer_done = threading.Event()
    read_versions: list[str] = []
    read_errors: list[str] = []

    def read_pointer_until_done() -> None:
        while not writer_done.is_set():
            text = pointer.read_text()
            try:
                read_versions.append(json.loads(text)["version"])
            except (json.JSONDecodeError, KeyError) as exc:
                read_errors.append(f"{exc}: {text!r}")

    reader = threading.Thread(target=read_pointer_until_done)
    reader.start()
    try:
        for index in range(60):
            registry.deploy(versions[(index + 1) % 3], reason=f"deploy {index}")
    finally:
        writer_done.set()
        reader.join()

    assert read_errors == []
    assert len(read_versions) > 0
    assert set(read_versions) <= set(versions)
    assert sorted(path.name for path in registry.root.iterdir()) == [
        ".lock",
        "champion.json",
        "deployments.jsonl",
        "models",
    ]
    assert len(registry.history()) == 61


# Lineage


def test_lineage_back_to_full_train(registry: ModelRegistry, full_model) -> None:
    root = _register_full(registry, full_model)
    first_child = continue_training(registry.load(root), make_rows("2011-01-06", seed=1), FEATURES, CONFIG)
    child = _register_continued(registry, first_child, root, "2011-01-06")
    second_child = continue_training(registry.load(child), make_rows("2011-01-07", seed=2), FEATURES, CONFIG)
    grandchild = _register_continued(registry, second_child, child, "2011-01-07")

    chain = registry.lineage(grandchild)

    assert [record["version"] for record in chain] == [grandchild, child, root]
    assert [record["kind"] for record in chain] == ["continued", "continued", "full"]
    assert [record["tree_count"] for record in chain] == [14, 11, 8]
    assert [record["training_partitions"][0]["day"] for record in chain] == [
        "2011-01-07",
        "2011-01-06",
        "2011-01-05",
    ]


def test_lineage_stops_at_rebase(registry: ModelRegistry, full_model) -> None:
    root = _register_full(registry, full_model)
    booster = continue_training(full_model, make_rows("2011-01-06", seed=1), FEATURES, CONFIG)
    child = _register_continued(registry, booster, root, "2011-01-06")
    rebase = _register_full(registry, full_model, day="2011-01-07", parent=child)
    booster = continue_training(full_model, make_rows("2011-01-08", seed=3), FEATURES, CONFIG)
    after_rebase = _register_continued(registry, booster, rebase, "2011-01-08")

    assert [record["version"] for record in registry.lineage(after_rebase)] == [after_rebase, rebase]
    assert [record["version"] for record in registry.lineage(rebase)] == [rebase]


def test_continued_model_leaves_parent_file_unchanged(registry: ModelRegistry, full_model) -> None:
    root = _register_full(registry, full_model)
    parent_file = registry.root / "models" / root / "model.ubj"
    before = parent_file.read_bytes()
    parent = registry.load(root)

    booster = continue_training(parent, make_rows("2011-01-06", seed=1), FEATURES, CONFIG)
    child = _register_continued(registry, booster, root, "2011-01-06")

    assert parent_file.read_bytes() == before
    assert tree_count(parent) == CONFIG.full_train_trees
    assert tree_count(registry.load(child)) == CONFIG.full_train_trees + CONFIG.trees_per_day


def test_deploying_the_champion_again_changes_nothing(registry: ModelRegistry, full_model) -> None:
    first, second, _ = _three_versions(registry, full_model)
    registry.deploy(first, reason="first")
    registry.deploy(second, reason="second")

    registry.deploy(second, reason="again")

    assert registry.champion() == second
    assert [event["version"] for event in registry.history()] == [first, second]
    assert json.loads((registry.root / "champion.json").read_text())["previous"] == first


def test_champion_for_rerun_day(registry: ModelRegistry, full_model) -> None:
    first, second, third = _three_versions(registry, full_model)
    days = {version: registry.metadata(version)["day"] for version in (first, second, third)}
    registry.deploy(first, reason="first")
    registry.deploy(third, reason="third")

    assert registry.champion_for(days[third]) == first
    assert registry.champion_for("2099-01-01") == third
    assert registry.champion_for(days[first]) is None
