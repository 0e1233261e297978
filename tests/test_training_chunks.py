"""Tests of bounded-memory training rows: the join in user chunks, the chunked writer, and sampled reads."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from freshrank.config import ConfigError, Settings, load_settings
from freshrank.drift import sample_rows
from freshrank.training_rows import (
    build_training_rows,
    label_rows,
    read_training_rows,
    sample_stored_rows,
    stored_row_batches,
    training_rows_path,
    user_chunks,
    write_training_row_chunks,
    write_training_rows,
)
from freshrank.warehouse import connect

FUNNEL_DAY = date(2024, 3, 10)


@pytest.fixture(scope="module")
def funnel_home(tmp_path_factory, core_home_builder, core_shop, core_feature_days) -> Settings:
    """The tiny shop (views, carts and purchases) with its features; read-only."""
    return core_home_builder(tmp_path_factory.mktemp("chunks") / "home", core_shop(), core_feature_days)


def with_chunk_rows(settings: Settings, rows: int) -> Settings:
    return settings.model_copy(update={"training": settings.training.model_copy(update={"join_chunk_rows": rows})})


def test_user_chunks_keep_users_whole() -> None:
    users = pd.Series(["a", "a", "b", "c", "c", "c", "d"])
    assert user_chunks(users, 3) == [(0, 3), (3, 6), (6, 7)]
    assert user_chunks(users, 100) == [(0, 7)]


def test_user_over_the_bound_gets_its_own_chunk() -> None:
    users = pd.Series(["a", "b", "b", "b", "b", "c"])
    assert user_chunks(users, 2) == [(0, 1), (1, 5), (5, 6)]


def test_user_chunks_of_no_rows() -> None:
    assert user_chunks(pd.Series([], dtype="object"), 5) == []


def test_chunked_join_equals_one_join(funnel_home: Settings) -> None:
    labels, _ = label_rows(funnel_home, FUNNEL_DAY)
    assert len(user_chunks(labels["user_id"], 2)) > 1
    whole, mode = build_training_rows(with_chunk_rows(funnel_home, 1_000_000), FUNNEL_DAY)
    chunked, chunked_mode = build_training_rows(with_chunk_rows(funnel_home, 2), FUNNEL_DAY)
    assert chunked_mode == mode == "funnel"
    pd.testing.assert_frame_equal(chunked, whole)


def rows_of(users: list[str], label: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": users, "item_id": ["i1"] * len(users), "event_day": ["2024-03-10"] * len(users), "label": [label] * len(users), "f": [0.5] * len(users)}
    )


def test_chunk_writer_counts_and_concatenates(core_settings: Settings) -> None:
    first, second = rows_of(["u1", "u1", "u2"], 1), rows_of(["u3"], 0)
    stored = write_training_row_chunks(core_settings, FUNNEL_DAY, iter([first, second]))
    assert (stored.rows, stored.positives, stored.users) == (4, 3, 3)
    expected = pd.concat([first, second], ignore_index=True)
    pd.testing.assert_frame_equal(read_training_rows(core_settings, [FUNNEL_DAY]), expected)


def test_failed_chunk_keeps_stored_rows(core_settings: Settings) -> None:
    stored_before = rows_of(["u9"], 1)
    write_training_rows(core_settings, FUNNEL_DAY, stored_before)

    def chunks():
        yield rows_of(["u1"], 1)
        raise RuntimeError("join failed")

    with pytest.raises(RuntimeError, match="join failed"):
        write_training_row_chunks(core_settings, FUNNEL_DAY, chunks())
    pd.testing.assert_frame_equal(read_training_rows(core_settings, [FUNNEL_DAY]), stored_before)
    assert [path.name for path in training_rows_path(core_settings, FUNNEL_DAY).parent.iterdir()] == ["2024-03-10.parquet"]


def stored_days(settings: Settings, sizes: list[int]) -> list[date]:
    days = []
    for index, size in enumerate(sizes):
        day = date(2024, 5, 1 + index)
        rng = np.random.default_rng(index)
        frame = pd.DataFrame({"user_id": [f"u{n}" for n in range(size)], "label": rng.integers(0, 2, size), "f": rng.random(size), "g": rng.random(size)})
        write_training_rows(settings, day, frame)
        days.append(day)
    return days


@pytest.mark.parametrize("max_rows", [50, 1_000])
def test_sampled_read_draws_what_sample_rows_draws(core_settings: Settings, max_rows: int) -> None:
    days = stored_days(core_settings, [120, 0, 300, 80])
    expected = sample_rows(read_training_rows(core_settings, days)[["f", "g"]], max_rows, seed=7)
    pd.testing.assert_frame_equal(sample_stored_rows(core_settings, days, max_rows, 7, ["f", "g"]), expected)


def test_batches_cover_the_day_in_order(core_settings: Settings) -> None:
    day = stored_days(core_settings, [1_001])[0]
    batches = list(stored_row_batches(core_settings, day, ["f"], batch_rows=400))
    assert [len(batch) for batch in batches] == [400, 400, 201]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), read_training_rows(core_settings, [day])[["f"]])


def test_duckdb_memory_bound_applies(core_settings: Settings) -> None:
    bound = core_settings.model_copy(update={"duckdb_memory_limit": "300MB"}).duckdb_memory
    with connect(core_settings.warehouse_path, memory=bound) as con:
        limit, temp = con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
    assert limit == "286.1 MiB"
    assert temp == str(core_settings.home / "tmp" / "duckdb")
    plain = duckdb.connect()
    bound.apply(plain)
    assert plain.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "286.1 MiB"


def test_duckdb_memory_limit_must_be_a_size(tmp_path) -> None:
    (tmp_path / "freshrank.yaml").write_text("duckdb_memory_limit: lots\n")
    with pytest.raises(ConfigError, match="duckdb_memory_limit 'lots' is not a size"):
        load_settings(tmp_path)
