"""Tests of the compact read of stored training rows and of the row budget of one training run."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshrank.config import Settings, load_settings
from freshrank.training_rows import read_compact_training_rows, read_training_rows, stored_row_count, write_training_rows
from models.policy import training_and_holdout_rows

FIRST_DAY = date(2024, 5, 1)
DAYS = [FIRST_DAY + timedelta(days=offset) for offset in range(4)]
USERS = 200
ITEMS_PER_USER = 5


def day_rows(day: date) -> pd.DataFrame:
    """Five rows per user, one of them a purchase, with a float feature and a null."""
    rng = np.random.default_rng(day.toordinal())
    rows = USERS * ITEMS_PER_USER
    return pd.DataFrame(
        {
            "user_id": [f"u{index // ITEMS_PER_USER:04d}" for index in range(rows)],
            "item_id": [f"i{index % ITEMS_PER_USER}" for index in range(rows)],
            "event_day": day.isoformat(),
            "label": [int(index % ITEMS_PER_USER == 0) for index in range(rows)],
            "views": rng.poisson(3.0, rows).astype("float64"),
            "price": np.where(rng.random(rows) < 0.1, np.nan, rng.gamma(2.0, 10.0, rows)),
        }
    )


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    settings = load_settings(tmp_path / "home")
    for day in DAYS:
        write_training_rows(settings, day, day_rows(day))
    return settings


def with_budget(settings: Settings, rows: int) -> Settings:
    return settings.model_copy(update={"training": settings.training.model_copy(update={"max_training_rows": rows})})


def groups(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"].astype(str), frame["event_day"].astype(str)))


def test_compact_rows_hold_the_same_values(home: Settings) -> None:
    plain = read_training_rows(home, DAYS)
    compact = read_compact_training_rows(home, DAYS)

    assert str(compact["views"].dtype) == "float32"
    assert compact["user_id"].tolist() == plain["user_id"].tolist()
    np.testing.assert_array_equal(compact["price"].to_numpy(), plain["price"].to_numpy(dtype=np.float32))
    assert compact["label"].tolist() == plain["label"].tolist()


def test_row_count_from_footers(home: Settings) -> None:
    assert stored_row_count(home, DAYS + [date(2030, 1, 1)]) == len(DAYS) * USERS * ITEMS_PER_USER


def test_keep_share_keeps_whole_groups(home: Settings) -> None:
    kept = read_compact_training_rows(home, DAYS, keep_share=0.5)

    sizes = kept.groupby(["user_id", "event_day"], observed=True).size()
    assert set(sizes) == {ITEMS_PER_USER}
    share = len(sizes) / (len(DAYS) * USERS)
    assert 0.4 < share < 0.6


def test_keep_share_is_seeded(home: Settings) -> None:
    first = read_compact_training_rows(home, DAYS, keep_share=0.3)
    second = read_compact_training_rows(home, DAYS, keep_share=0.3)
    other_seed = home.model_copy(update={"training": home.training.model_copy(update={"seed": home.training.seed + 1})})
    third = read_compact_training_rows(other_seed, DAYS, keep_share=0.3)

    assert groups(first) == groups(second)
    assert groups(first) != groups(third)


def test_budget_samples_earlier_days_only(home: Settings) -> None:
    day = DAYS[-1]
    full_train, full_holdout = training_and_holdout_rows(home, DAYS, day)
    budget = 2000
    train, holdout = training_and_holdout_rows(with_budget(home, budget), DAYS, day)

    today = train[train["event_day"] == day.isoformat()]
    full_today = full_train[full_train["event_day"] == day.isoformat()]
    assert groups(today) == groups(full_today)
    assert groups(holdout) == groups(full_holdout)
    earlier = len(train) - len(today)
    # Groups are kept by hash, so the count is near the room left, not exactly on it.
    assert 0.8 * (budget - len(today)) < earlier < 1.2 * (budget - len(today))
    assert groups(train) <= groups(full_train)


def test_budget_above_the_rows_keeps_everything(home: Settings) -> None:
    train, _ = training_and_holdout_rows(with_budget(home, 10**9), DAYS, DAYS[-1])
    full_train, _ = training_and_holdout_rows(home, DAYS, DAYS[-1])

    assert len(train) == len(full_train)
    assert groups(train) == groups(full_train)
