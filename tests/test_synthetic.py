"""Tests of freshrank.synthetic: determinism, schema, funnel, seasonality and learnable signal."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from freshrank import synthetic
from freshrank.importers.landing import INCREMENT_FILE_NAME
from freshrank.schema import EVENT_TYPES, INCREMENT_COLUMNS
from freshrank.synthetic import WEEKEND_FACTOR, ShopSpec, generate_day, generate_shop

SPEC = ShopSpec(days=28, users=1500, items=400, seed=11)


@pytest.fixture(scope="module")
def month() -> list[pd.DataFrame]:
    return [generate_day(SPEC, index) for index in range(SPEC.days)]


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    return frame["event_type"].value_counts().to_dict()


# Determinism ------------------------------------------------------------------------------


def test_same_spec_same_frame() -> None:
    first = generate_day(SPEC, 3)
    synthetic._world.cache_clear()
    second = generate_day(SPEC, 3)

    pd.testing.assert_frame_equal(first, second)


def test_day_alone_equals_full_run(tmp_path: Path) -> None:
    spec = ShopSpec(days=4, users=300, items=120, seed=5)
    generate_shop(tmp_path / "landing", spec)
    synthetic._world.cache_clear()

    alone = generate_day(ShopSpec(days=10, users=300, items=120, seed=5), 2)
    written = pd.read_parquet(tmp_path / "landing" / "2024-01-03" / INCREMENT_FILE_NAME)

    pd.testing.assert_frame_equal(written, alone, check_dtype=False)
    assert written["event_time"].tolist() == alone["event_time"].tolist()


def test_same_spec_same_bytes(tmp_path: Path) -> None:
    spec = ShopSpec(days=3, users=200, items=80, seed=9)

    generate_shop(tmp_path / "a", spec)
    synthetic._world.cache_clear()
    generate_shop(tmp_path / "b", spec)

    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        first = (tmp_path / "a" / day / INCREMENT_FILE_NAME).read_bytes()
        second = (tmp_path / "b" / day / INCREMENT_FILE_NAME).read_bytes()
        assert first == second, day


def test_other_seed_other_events() -> None:
    first = generate_day(ShopSpec(days=1, users=200, items=80, seed=1), 0)
    second = generate_day(ShopSpec(days=1, users=200, items=80, seed=2), 0)

    assert not first["item_id"].equals(second["item_id"])


# Schema and layout -------------------------------------------------------------------------


def test_schema_and_dtypes(month: list[pd.DataFrame]) -> None:
    frame = month[0]

    assert list(frame.columns) == list(INCREMENT_COLUMNS)
    assert str(frame["event_time"].dtype) == "datetime64[ns, UTC]"
    for name in ("user_id", "item_id", "event_type", "category", "session_id"):
        assert str(frame[name].dtype) == "string", name
        assert not frame[name].isna().any(), name
    assert frame["quantity"].dtype == np.float64
    assert frame["price"].dtype == np.float64
    assert set(frame["event_type"]) == set(EVENT_TYPES)
    assert (frame["quantity"] >= 1).all()
    assert (frame["price"] > 0).all()
    assert frame["event_time"].is_monotonic_increasing


def test_id_formats(month: list[pd.DataFrame]) -> None:
    frame = month[0]

    assert frame["user_id"].str.fullmatch(r"u\d{6}").all()
    assert frame["item_id"].str.fullmatch(r"i\d{6}").all()
    assert frame["category"].str.fullmatch(r"c\d{2}").all()
    assert frame["session_id"].str.fullmatch(r"20240101-\d{7}").all()


def test_item_has_one_category_and_price(month: list[pd.DataFrame]) -> None:
    frame = pd.concat(month[:3])

    assert (frame.groupby("item_id")["category"].nunique() == 1).all()
    assert (frame.groupby("item_id")["price"].nunique() == 1).all()


def test_events_inside_local_day() -> None:
    # 2024-03-10 has 23 hours in New York (daylight saving starts).
    spec = ShopSpec(days=1, users=400, items=100, seed=3, start=date(2024, 3, 10), timezone="America/New_York")
    zone = ZoneInfo("America/New_York")

    frame = generate_day(spec, 0)
    start = pd.Timestamp(datetime.combine(date(2024, 3, 10), time(), tzinfo=zone))
    end = pd.Timestamp(datetime.combine(date(2024, 3, 11), time(), tzinfo=zone))

    assert frame["event_time"].min() >= start
    assert frame["event_time"].max() < end


def test_generate_shop_writes_days(tmp_path: Path) -> None:
    spec = ShopSpec(days=3, users=100, items=50, seed=4, start=date(2024, 2, 28))

    days = generate_shop(tmp_path / "landing", spec)

    assert days == ["2024-02-28", "2024-02-29", "2024-03-01"]
    for day in days:
        assert sorted(path.name for path in (tmp_path / "landing" / day).iterdir()) == [INCREMENT_FILE_NAME]


# Behaviour ---------------------------------------------------------------------------------


def test_funnel_ratios(month: list[pd.DataFrame]) -> None:
    counts = _counts(pd.concat(month))
    cart_rate = counts["add_to_cart"] / counts["view"]
    purchase_rate = counts["purchase"] / counts["add_to_cart"]

    assert 0.03 <= cart_rate <= 0.2
    assert 0.3 <= purchase_rate <= 0.8


def test_funnel_order(month: list[pd.DataFrame]) -> None:
    frame = month[5]
    first_time = frame.groupby(["session_id", "item_id", "event_type"])["event_time"].min().unstack()
    carted = first_time[first_time["add_to_cart"].notna()]
    bought = first_time[first_time["purchase"].notna()]

    assert carted["view"].notna().all()
    assert (carted["view"] <= carted["add_to_cart"]).all()
    assert bought["add_to_cart"].notna().all()
    assert (bought["add_to_cart"] <= bought["purchase"]).all()


def test_volume_near_spec(month: list[pd.DataFrame]) -> None:
    weekdays = [len(frame) for index, frame in enumerate(month) if SPEC.day(index).weekday() < 5]

    assert abs(np.mean(weekdays) / SPEC.weekday_events - 1.0) < 0.1


def test_weekend_volume(month: list[pd.DataFrame]) -> None:
    weekend = [len(frame) for index, frame in enumerate(month) if SPEC.day(index).weekday() >= 5]
    weekdays = [len(frame) for index, frame in enumerate(month) if SPEC.day(index).weekday() < 5]
    ratio = np.mean(weekend) / np.mean(weekdays)

    assert WEEKEND_FACTOR - 0.12 <= ratio <= WEEKEND_FACTOR + 0.12


def test_views_follow_power_law(month: list[pd.DataFrame]) -> None:
    frame = pd.concat(month)
    views = frame.loc[frame["event_type"] == "view", "item_id"].value_counts()
    top = views.iloc[: SPEC.items // 10].sum()

    assert top / views.sum() > 0.5


def test_repeat_purchases_across_days(month: list[pd.DataFrame]) -> None:
    frame = pd.concat(month[:14])
    purchases = frame[frame["event_type"] == "purchase"]
    days_per_pair = purchases.groupby(["user_id", "item_id"])["event_time"].agg(lambda times: times.dt.date.nunique())

    assert int((days_per_pair >= 2).sum()) >= 50


def test_affinity_and_popularity_beat_random(month: list[pd.DataFrame]) -> None:
    history = pd.concat(month[:14])
    views = history[history["event_type"] == "view"]
    popularity = views["item_id"].value_counts()
    category_share = views.groupby("user_id")["category"].value_counts(normalize=True)
    item_category = history.drop_duplicates("item_id").set_index("item_id")["category"]

    target = month[14]
    bought = target[target["event_type"] == "purchase"][["user_id", "item_id"]].drop_duplicates()
    rng = np.random.default_rng(0)
    negatives = pd.DataFrame(
        {
            "user_id": bought["user_id"].to_numpy(),
            "item_id": rng.choice(popularity.index.to_numpy(), size=len(bought)),
        }
    )
    pairs = pd.concat([bought.assign(label=1), negatives.assign(label=0)], ignore_index=True)

    share_keys = pd.MultiIndex.from_arrays([pairs["user_id"], pairs["item_id"].map(item_category)])
    share = category_share.reindex(share_keys).fillna(0.0).to_numpy()
    log_popularity = np.log1p(pairs["item_id"].map(popularity).fillna(0.0).to_numpy())
    auc = roc_auc_score(pairs["label"], (share + 0.05) * log_popularity)

    assert auc > 0.7


# Spec validation ---------------------------------------------------------------------------


def test_spec_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="ShopSpec.days must be at least 1"):
        ShopSpec(days=0, users=10, items=10, seed=1)
    with pytest.raises(ValueError, match="ShopSpec.seed must be a non-negative integer"):
        ShopSpec(days=1, users=10, items=50, seed=-1)
    with pytest.raises(ValueError, match=r"ShopSpec.items \(5\) must be at least ShopSpec.categories \(20\)"):
        ShopSpec(days=1, users=10, items=5, seed=1)
    with pytest.raises(ValueError, match="events_per_day must be at least 1"):
        ShopSpec(days=1, users=10, items=50, seed=1, events_per_day=0)
    with pytest.raises(ValueError, match="unknown timezone 'Nowhere/City'"):
        ShopSpec(days=1, users=10, items=50, seed=1, timezone="Nowhere/City")


def test_day_index_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"day_index must be in \[0, 28\), not 28"):
        generate_day(SPEC, 28)


def test_events_per_day_default_and_override() -> None:
    assert SPEC.weekday_events == 2.0 * SPEC.users
    assert ShopSpec(days=1, users=10, items=50, seed=1, events_per_day=700).weekday_events == 700.0
    assert SPEC.day(31) == date(2024, 1, 1) + timedelta(days=31)
