"""Tests of labelled training rows (freshrank.training_rows): funnel labels, sampled negatives, features of the day before."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from freshrank.config import Settings
from freshrank.feature_store import model_feature_names
from freshrank.features import partition_path
from freshrank.training_rows import (
    KEY_COLUMNS,
    build_training_rows,
    label_rows,
    read_training_rows,
    sample_negatives,
    stored_training_days,
    write_training_rows,
)

FUNNEL_DAY = date(2024, 3, 10)
FIRST_DAY = date(2024, 4, 1)
SECOND_DAY = date(2024, 4, 2)


def pairs(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    return [(row.user_id, row.item_id, int(row.label)) for row in frame.itertuples(index=False)]


def negatives_of(frame: pd.DataFrame, user: str) -> set[str]:
    return set(frame[(frame["user_id"] == user) & (frame["label"] == 0)]["item_id"])


@pytest.fixture(scope="module")
def funnel_home(tmp_path_factory, core_home_builder, core_shop, core_feature_days) -> Settings:
    """The tiny shop (views, carts and purchases) with its features; read-only."""
    return core_home_builder(tmp_path_factory.mktemp("funnel") / "home", core_shop(), core_feature_days)


@pytest.fixture(scope="module")
def purchase_home(tmp_path_factory, core_home_builder, core_event_row) -> Settings:
    """A purchase-only shop of two days with 2 negatives per purchase; read-only.

    On 1 April i1 is bought twice, i2 and i3 once each; on 2 April u1 buys i2 and u2 buys
    i1 and i4, which no user bought before.
    """
    home = tmp_path_factory.mktemp("purchases") / "home"
    home.mkdir()
    (home / "freshrank.yaml").write_text("training:\n  negatives_per_positive: 2\n")
    shop = {
        FIRST_DAY: pd.DataFrame(
            [
                core_event_row("2024-04-01 09:00", "u1", "i1", "purchase"),
                core_event_row("2024-04-01 10:00", "u2", "i1", "purchase"),
                core_event_row("2024-04-01 11:00", "u3", "i2", "purchase"),
                core_event_row("2024-04-01 12:00", "u4", "i3", "purchase"),
            ]
        ),
        SECOND_DAY: pd.DataFrame(
            [
                core_event_row("2024-04-02 09:00", "u1", "i2", "purchase"),
                core_event_row("2024-04-02 10:00", "u2", "i1", "purchase"),
                core_event_row("2024-04-02 10:30", "u2", "i4", "purchase"),
            ]
        ),
    }
    return core_home_builder(home, shop, (FIRST_DAY, SECOND_DAY))


def test_funnel_candidates_and_labels(funnel_home: Settings) -> None:
    rows, mode = label_rows(funnel_home, FUNNEL_DAY)
    assert mode == "funnel"
    assert pairs(rows) == [("u1", "i1", 0), ("u1", "i3", 1), ("u2", "i2", 0)]


def test_funnel_skips_rows_without_user(funnel_home: Settings) -> None:
    rows, _ = label_rows(funnel_home, date(2024, 3, 5))
    assert pairs(rows) == [("u1", "i2", 0), ("u2", "i1", 1)]


def test_training_rows_layout(funnel_home: Settings) -> None:
    rows, mode = build_training_rows(funnel_home, FUNNEL_DAY)
    assert mode == "funnel"
    assert rows.columns.tolist() == list(KEY_COLUMNS) + model_feature_names(funnel_home)
    assert set(rows["event_day"]) == {"2024-03-10"}
    assert str(rows["label"].dtype) == "int64"
    assert pairs(rows) == [("u1", "i1", 0), ("u1", "i3", 1), ("u2", "i2", 0)]


def test_features_from_day_before(funnel_home: Settings) -> None:
    rows, _ = build_training_rows(funnel_home, FUNNEL_DAY)
    previous = pd.read_parquet(partition_path(funnel_home.offline_dir, "user_features", date(2024, 3, 9)))
    same_day = pd.read_parquet(partition_path(funnel_home.offline_dir, "user_features", FUNNEL_DAY))
    u1 = rows[rows["user_id"] == "u1"].iloc[0]
    assert u1["u_views_28d"] == previous.set_index("user_id").loc["u1", "u_views_28d"]
    assert u1["u_views_28d"] != same_day.set_index("user_id").loc["u1", "u_views_28d"]


def test_label_day_events_not_in_features(funnel_home: Settings) -> None:
    # i3 was first seen on the labelled day, so it has no features yet.
    rows, _ = build_training_rows(funnel_home, FUNNEL_DAY)
    bought = rows[(rows["user_id"] == "u1") & (rows["item_id"] == "i3")].iloc[0]
    assert pd.isna(bought["i_purchases_28d"])
    assert pd.isna(bought["ui_purchases_90d"])
    assert bought["u_purchases_1d"] == 0


def test_purchase_only_positives(purchase_home: Settings) -> None:
    rows, mode = label_rows(purchase_home, SECOND_DAY)
    assert mode == "sampled_negatives"
    positives = rows[rows["label"] == 1]
    assert pairs(positives) == [("u1", "i2", 1), ("u2", "i1", 1), ("u2", "i4", 1)]


def test_negatives_exclude_bought_items(purchase_home: Settings) -> None:
    rows, _ = label_rows(purchase_home, SECOND_DAY)
    assert negatives_of(rows, "u1").isdisjoint({"i2"})
    assert negatives_of(rows, "u2").isdisjoint({"i1", "i4"})


def test_negatives_per_purchase(purchase_home: Settings) -> None:
    # u1: 2 per purchase from i1, i3. u2: 2 x 2 wanted, but only i2 and i3 were bought before.
    rows, _ = label_rows(purchase_home, SECOND_DAY)
    assert negatives_of(rows, "u1") == {"i1", "i3"}
    assert negatives_of(rows, "u2") == {"i2", "i3"}


def test_unbought_item_never_negative(purchase_home: Settings) -> None:
    rows, _ = label_rows(purchase_home, SECOND_DAY)
    assert "i4" not in set(rows[rows["label"] == 0]["item_id"])


def test_sampling_deterministic(purchase_home: Settings) -> None:
    first, _ = label_rows(purchase_home, SECOND_DAY)
    second, _ = label_rows(purchase_home, SECOND_DAY)
    pd.testing.assert_frame_equal(first, second)


def test_first_day_weights_by_own_purchases(purchase_home: Settings) -> None:
    rows, _ = label_rows(purchase_home, FIRST_DAY)
    assert set(rows[rows["label"] == 0]["item_id"]) <= {"i1", "i2", "i3"}
    assert negatives_of(rows, "u3") == {"i1", "i3"}
    assert negatives_of(rows, "u1") == {"i2", "i3"}


def test_purchase_only_features_from_day_before(purchase_home: Settings) -> None:
    rows, mode = build_training_rows(purchase_home, SECOND_DAY)
    assert mode == "sampled_negatives"
    u1_bought = rows[(rows["user_id"] == "u1") & (rows["item_id"] == "i2")].iloc[0]
    assert u1_bought["u_purchases_28d"] == 1
    assert u1_bought["i_purchases_28d"] == 1
    assert pd.isna(u1_bought["ui_purchases_90d"])


def test_sample_weights_by_popularity() -> None:
    positives = pd.DataFrame({"user_id": [f"u{n:03d}" for n in range(300)], "item_id": "z", "label": 1})
    popularity = pd.DataFrame({"item_id": ["a", "b", "c", "z"], "purchases": [98, 1, 1, 50]})
    negatives = sample_negatives(positives, popularity, per_positive=1, seed=3)
    counts = negatives["item_id"].value_counts()
    assert len(negatives) == 300
    assert "z" not in counts
    assert counts["a"] > 250


def test_sample_fills_quota_past_top_item() -> None:
    # The user bought the most popular item; draws must still reach the quota from the rest.
    positives = pd.DataFrame({"user_id": ["u1"], "item_id": ["i0"], "label": [1]})
    popularity = pd.DataFrame({"item_id": [f"i{n}" for n in range(12)], "purchases": [100] + [1] * 11})
    negatives = sample_negatives(positives, popularity, per_positive=10, seed=0)
    assert len(negatives) == 10
    assert negatives["item_id"].is_unique
    assert "i0" not in set(negatives["item_id"])


def test_sample_capped_by_available_items() -> None:
    positives = pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "label": [1]})
    popularity = pd.DataFrame({"item_id": ["a", "b", "c"], "purchases": [5, 3, 1]})
    negatives = sample_negatives(positives, popularity, per_positive=10, seed=0)
    assert sorted(negatives["item_id"]) == ["b", "c"]


def test_sample_same_seed_same_rows() -> None:
    positives = pd.DataFrame({"user_id": [f"u{n}" for n in range(50)], "item_id": "z", "label": 1})
    popularity = pd.DataFrame({"item_id": [f"i{n}" for n in range(40)], "purchases": range(1, 41)})
    first = sample_negatives(positives, popularity, 3, seed=11)
    pd.testing.assert_frame_equal(first, sample_negatives(positives, popularity, 3, seed=11))
    assert not first.equals(sample_negatives(positives, popularity, 3, seed=12))


def test_sample_without_positives_is_empty() -> None:
    positives = pd.DataFrame({"user_id": [], "item_id": [], "label": []})
    popularity = pd.DataFrame({"item_id": ["a"], "purchases": [1]})
    negatives = sample_negatives(positives, popularity, 5, seed=0)
    assert negatives.empty
    assert negatives.columns.tolist() == ["user_id", "item_id", "label"]


def test_rows_round_trip(core_settings: Settings) -> None:
    rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_day": ["2024-03-10"], "label": [1], "f": [0.5]})
    path = write_training_rows(core_settings, FUNNEL_DAY, rows)
    assert path.name == "2024-03-10.parquet"
    assert [p.name for p in path.parent.iterdir()] == ["2024-03-10.parquet"]
    pd.testing.assert_frame_equal(read_training_rows(core_settings, [FUNNEL_DAY, date(2024, 3, 11)]), rows)


def test_stored_days_before_limit(core_settings: Settings) -> None:
    rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_day": ["x"], "label": [1]})
    for day in (date(2024, 3, 1), date(2024, 3, 3), date(2024, 3, 4), date(2024, 3, 6)):
        write_training_rows(core_settings, day, rows)
    assert stored_training_days(core_settings, date(2024, 3, 6), 2) == [date(2024, 3, 3), date(2024, 3, 4)]
    assert stored_training_days(core_settings, date(2024, 3, 6), 10) == [date(2024, 3, 1), date(2024, 3, 3), date(2024, 3, 4)]


def test_no_stored_rows(core_settings: Settings) -> None:
    assert read_training_rows(core_settings, [FUNNEL_DAY]).empty
    assert stored_training_days(core_settings, FUNNEL_DAY, 5) == []
