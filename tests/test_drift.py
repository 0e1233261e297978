"""Tests of the Evidently drift check (freshrank.drift) on generated feature and prediction frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from freshrank.config import DriftConfig
from freshrank.drift import check_drift, sample_rows
from freshrank.errors import DriftInputError

COLUMNS = ["views_7d", "purchases_28d", "price_mean", "prediction"]
CONFIG = DriftConfig()


def make_rows(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Return feature and prediction rows; ``shift`` adds a constant to the named columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "views_7d": rng.poisson(12.0, rows).astype("int64"),
            "purchases_28d": rng.gamma(2.0, 1.5, rows),
            "price_mean": rng.normal(40.0, 8.0, rows),
            "prediction": rng.beta(2.0, 5.0, rows),
            "user_id": rng.integers(0, 100, rows).astype(str),
        }
    )
    for column, offset in (shift or {}).items():
        frame[column] = frame[column] + offset
    return frame


def test_same_distribution_has_no_drift():
    result = check_drift(make_rows(3000, seed=1), make_rows(3000, seed=2), COLUMNS, CONFIG, None)
    assert result.drifted_columns == []
    assert result.drift_share == 0.0
    assert result.alert is False
    assert result.threshold == CONFIG.drift_share_threshold
    assert set(result.columns) == set(COLUMNS)


def test_identical_small_frames_have_no_drift():
    frame = make_rows(400, seed=3)
    result = check_drift(frame, frame.copy(), COLUMNS, CONFIG, None)
    assert result.drifted_columns == []
    assert result.columns["price_mean"]["stat_test"] == "K-S p_value"
    assert result.columns["price_mean"]["drift_score"] == pytest.approx(1.0)


def test_shifted_column_is_flagged():
    reference = make_rows(3000, seed=1)
    current = make_rows(3000, seed=2, shift={"price_mean": 12.0})
    result = check_drift(reference, current, COLUMNS, CONFIG, None)
    assert result.drifted_columns == ["price_mean"]
    assert result.drift_share == pytest.approx(0.25)
    assert result.alert is False
    shifted = result.columns["price_mean"]
    assert shifted["drifted"] is True
    assert shifted["drift_score"] >= shifted["threshold"]
    assert shifted["stat_test"] == "Wasserstein distance (normed)"


def test_drift_share_over_threshold_alerts():
    shift = {"price_mean": 12.0, "purchases_28d": 5.0, "prediction": 0.4}
    result = check_drift(make_rows(3000, seed=1), make_rows(3000, seed=2, shift=shift), COLUMNS, CONFIG, None)
    assert sorted(result.drifted_columns) == sorted(shift)
    assert result.drift_share == pytest.approx(0.75)
    assert result.alert is True


def test_html_report_is_written(tmp_path):
    html_path = tmp_path / "reports" / "drift.html"
    reference = make_rows(2000, seed=1)
    current = make_rows(2000, seed=2, shift={"price_mean": 12.0})
    result = check_drift(reference, current, COLUMNS, CONFIG, html_path)
    assert result.html_path == html_path
    assert html_path.stat().st_size > 50_000
    text = html_path.read_text(encoding="utf-8")
    assert "price_mean" in text
    assert [item.name for item in html_path.parent.iterdir()] == ["drift.html"]
    assert json.loads(json.dumps(result.to_dict()))["html_path"] == str(html_path)


def test_sampling_bound_is_respected():
    config = DriftConfig(max_rows=500)
    result = check_drift(make_rows(5000, seed=1), make_rows(2500, seed=2), COLUMNS, config, None)
    assert result.reference_rows == 500
    assert result.current_rows == 500
    # Evidently picks K-S for a reference of at most 1,000 rows, so it received the sample.
    assert result.columns["price_mean"]["stat_test"] == "K-S p_value"


def test_sampling_first_gives_the_same_result():
    # The daily loop samples the reference window before scoring its predictions.
    config = DriftConfig(max_rows=800)
    reference = make_rows(4000, seed=1)
    current = make_rows(4000, seed=2, shift={"price_mean": 3.0})

    direct = check_drift(reference, current, COLUMNS, config, None, seed=5)
    presampled = check_drift(sample_rows(reference, 800, seed=5), current, COLUMNS, config, None, seed=5)

    assert presampled.columns == direct.columns
    assert presampled.reference_rows == 800


def test_small_frames_are_not_sampled():
    result = check_drift(make_rows(300, seed=1), make_rows(200, seed=2), COLUMNS, CONFIG, None)
    assert result.reference_rows == 300
    assert result.current_rows == 200


def test_sampling_is_seeded():
    reference = make_rows(4000, seed=1)
    current = make_rows(4000, seed=2)
    config = DriftConfig(max_rows=800)
    first = check_drift(reference, current, COLUMNS, config, None, seed=5)
    second = check_drift(reference, current, COLUMNS, config, None, seed=5)
    other = check_drift(reference, current, COLUMNS, config, None, seed=6)
    assert first.columns == second.columns
    assert first.columns["price_mean"]["drift_score"] != other.columns["price_mean"]["drift_score"]


def test_constant_and_null_columns_do_not_crash(tmp_path):
    reference = make_rows(1500, seed=1).assign(constant=3.0, empty=np.nan)
    current = make_rows(1500, seed=2).assign(constant=3.0, empty=np.nan)
    columns = [*COLUMNS, "constant", "empty"]
    result = check_drift(reference, current, columns, CONFIG, tmp_path / "drift.html")
    assert result.columns["constant"]["drifted"] is False
    assert result.columns["empty"]["drifted"] is False
    assert result.columns["empty"]["stat_test"] is None
    assert "null in reference and current" in result.columns["empty"]["note"]
    # The all-null column is left out of the share's denominator.
    assert result.drift_share == 0.0
    assert result.html_path.exists()


def test_only_null_columns_write_html(tmp_path):
    frame = pd.DataFrame({"empty": [np.nan] * 10})
    result = check_drift(frame, frame.copy(), ["empty"], CONFIG, tmp_path / "drift.html")
    assert result.drift_share == 0.0
    assert result.alert is False
    assert "No column could be tested" in result.html_path.read_text(encoding="utf-8")


def test_column_null_in_current_only_drifts():
    reference = make_rows(1500, seed=1)
    current = make_rows(1500, seed=2).assign(price_mean=np.nan)
    result = check_drift(reference, current, COLUMNS, CONFIG, None)
    assert result.drifted_columns == ["price_mean"]
    assert "null in current" in result.columns["price_mean"]["note"]


def test_empty_reference_raises():
    with pytest.raises(DriftInputError, match="reference data of the drift check has no rows"):
        check_drift(make_rows(0, seed=1), make_rows(100, seed=2), COLUMNS, CONFIG, None)


def test_empty_current_raises():
    with pytest.raises(DriftInputError, match="current data"):
        check_drift(make_rows(100, seed=1), make_rows(0, seed=2), COLUMNS, CONFIG, None)


def test_missing_column_raises():
    current = make_rows(100, seed=2).drop(columns=["prediction"])
    with pytest.raises(DriftInputError, match="prediction"):
        check_drift(make_rows(100, seed=1), current, COLUMNS, CONFIG, None)


def test_text_column_raises():
    with pytest.raises(DriftInputError, match="user_id"):
        check_drift(make_rows(100, seed=1), make_rows(100, seed=2), [*COLUMNS, "user_id"], CONFIG, None)


def test_infinite_values_raise():
    current = make_rows(100, seed=2)
    current.loc[4, "price_mean"] = np.inf
    with pytest.raises(DriftInputError, match="infinite"):
        check_drift(make_rows(100, seed=1), current, COLUMNS, CONFIG, None)


def test_no_columns_raises():
    with pytest.raises(DriftInputError, match="no columns"):
        check_drift(make_rows(100, seed=1), make_rows(100, seed=2), [], CONFIG, None)


def test_repeated_column_raises():
    with pytest.raises(DriftInputError, match="more than once"):
        check_drift(make_rows(100, seed=1), make_rows(100, seed=2), [*COLUMNS, "prediction"], CONFIG, None)
