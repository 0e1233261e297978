"""Drift check of feature and prediction columns with Evidently 0.7.

Evidently's ``ValueDrift`` metric picks a statistical test per column from the data. In
Evidently 0.7.23, a reference of at most 1,000 rows gets the Kolmogorov-Smirnov test (or a
chi-square or Z-test for columns with at most 5 distinct values), all p-values. A larger
reference gets the normed Wasserstein distance (or the Jensen-Shannon distance for at most 5
distinct values). Per-column results are read from the report snapshot's dict, not its HTML.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from freshrank.config import DriftConfig
from freshrank.errors import DriftInputError

logger = logging.getLogger(__name__)

_VALUE_DRIFT_TYPE = "evidently:metric_v2:ValueDrift"
_FAILED_TEST_STATUS = "FAIL"


@dataclass
class DriftResult:
    """Drift of each checked column between a reference window and the current data.

    ``columns`` maps each requested column to ``stat_test`` (Evidently's method name),
    ``drift_score`` (a p-value for tests named "p_value", else a distance), ``threshold``,
    ``drifted`` and ``note``. A p-value drifts below its threshold and a distance at or above it.
    """

    drift_share: float
    """Drifted columns as a fraction of the columns that could be tested."""
    drifted_columns: list[str]
    columns: dict[str, dict]
    html_path: Path | None
    """Evidently HTML report, when one was requested."""
    threshold: float
    """Drift share above which ``alert`` is raised (``DriftConfig.drift_share_threshold``)."""
    alert: bool
    reference_rows: int = 0
    """Rows of the reference sample that was compared."""
    current_rows: int = 0
    """Rows of the current sample that was compared."""

    def to_dict(self) -> dict:
        """Return the result as a JSON-able dict, with the report path as a string."""
        data = asdict(self)
        data["html_path"] = None if self.html_path is None else str(self.html_path)
        return data


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    config: DriftConfig,
    html_path: Path | None,
    seed: int = 0,
) -> DriftResult:
    """Compare the distribution of each column in ``current`` with ``reference``.

    Each frame is sampled down to ``config.max_rows`` rows. A column that is all null in
    both samples is reported as not tested and counts neither as drifted nor in the share.
    A column that is all null on one side only counts as drifted without a statistical test.

    Args:
        reference: Rows of the reference window (for example training rows of earlier days).
        current: Rows of the day under check.
        columns: Numeric columns to compare, such as features and ``prediction``.
        config: Drift policy: sample size and alert threshold.
        html_path: Where to write Evidently's HTML report; None writes no report.
        seed: Seed of the row sampling.

    Returns:
        Per-column results, the drifted share and whether it raises an alert.

    Raises:
        DriftInputError: A frame is empty, ``columns`` is empty, or a column is missing,
            not numeric or contains infinite values.
    """
    _check_inputs(reference, current, columns)
    reference_sample = _sample(reference, columns, config.max_rows, seed, "reference")
    current_sample = _sample(current, columns, config.max_rows, seed, "current")

    results = _untestable_columns(reference_sample, current_sample, columns)
    tested = [column for column in columns if column not in results]
    snapshot = None
    if tested:
        snapshot = _run_report(reference_sample[tested], current_sample[tested], config)
        results.update(_column_results(snapshot.dict(), tested))
    ordered = {column: results[column] for column in columns}

    evaluated = [column for column, result in ordered.items() if result["stat_test"] is not None or result["drifted"]]
    drifted = [column for column, result in ordered.items() if result["drifted"]]
    share = len(drifted) / len(evaluated) if evaluated else 0.0
    if not evaluated:
        logger.warning("drift check tested no column: all of %s are null in both frames", columns)

    written = None
    if html_path is not None:
        written = _write_html(snapshot, Path(html_path), ordered)
    result = DriftResult(
        drift_share=share,
        drifted_columns=drifted,
        columns=ordered,
        html_path=written,
        threshold=config.drift_share_threshold,
        alert=share > config.drift_share_threshold,
        reference_rows=len(reference_sample),
        current_rows=len(current_sample),
    )
    logger.info(
        "drift check: %d of %d columns drifted (share %.3f, threshold %.3f)%s",
        len(drifted),
        len(evaluated),
        share,
        config.drift_share_threshold,
        ", alert" if result.alert else "",
    )
    return result


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    if not columns:
        raise DriftInputError("no columns were given to the drift check; pass the feature and prediction columns")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise DriftInputError(f"the drift columns {repeated} are listed more than once; list each column once")
    if reference.empty:
        raise DriftInputError(
            "the reference data of the drift check has no rows; widen DriftConfig.reference_days "
            "or run the check once earlier days have training rows"
        )
    if current.empty:
        raise DriftInputError("the current data of the drift check has no rows; pass the day's scored rows")
    for name, frame in (("reference", reference), ("current", current)):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise DriftInputError(f"the {name} data is missing the drift columns {missing}; pass frames that contain them")
        not_numeric = [column for column in columns if not pd.api.types.is_numeric_dtype(frame[column])]
        if not_numeric:
            dtypes = {column: str(frame[column].dtype) for column in not_numeric}
            raise DriftInputError(
                f"the drift check compares numeric columns only; the {name} data has {dtypes}. "
                "Encode these columns as numbers or leave them out"
            )


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Return the rows of ``frame`` that ``check_drift`` compares: all, or ``max_rows`` drawn without replacement.

    The draw depends only on the number of rows, ``max_rows`` and ``seed``, so a caller
    that samples first (to score predictions on the compared rows only) passes
    ``check_drift`` exactly the rows it would have drawn itself.
    """
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)


def _sample(frame: pd.DataFrame, columns: list[str], max_rows: int, seed: int, name: str) -> pd.DataFrame:
    """Return at most ``max_rows`` rows of ``columns`` as float64, drawn without replacement."""
    selected = sample_rows(frame[columns], max_rows, seed)
    values = selected.astype("float64").reset_index(drop=True)
    infinite = [column for column in columns if np.isinf(values[column]).any()]
    if infinite:
        raise DriftInputError(
            f"the {name} data has infinite values in {infinite}; replace them (for example by NaN) before the drift check"
        )
    return values


def _untestable_columns(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> dict[str, dict]:
    """Return results for columns without values on at least one side; Evidently rejects those."""
    results: dict[str, dict] = {}
    for column in columns:
        reference_empty = bool(reference[column].isna().all())
        current_empty = bool(current[column].isna().all())
        if reference_empty and current_empty:
            note = "not tested: all values are null in reference and current"
        elif reference_empty:
            note = "drifted: all values are null in reference but not in current"
        elif current_empty:
            note = "drifted: all values are null in current but not in reference"
        else:
            continue
        results[column] = {
            "stat_test": None,
            "drift_score": None,
            "threshold": None,
            "drifted": not (reference_empty and current_empty),
            "note": note,
        }
    return results


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig):
    """Run Evidently's per-column drift metrics with their tests and return the snapshot.

    ``DataDriftPreset`` runs the same ``ValueDrift`` metrics, and its legacy drift table
    tests every column again and renders it. Without it the drift step of a 100,000-event
    day took 2.7 s instead of 4.7 s (docs/benchmarks.md). ``DriftedColumnsCount`` gives the
    report its overview.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    columns = list(reference.columns)
    definition = DataDefinition(numerical_columns=columns)
    metrics = [DriftedColumnsCount(columns=columns, drift_share=config.drift_share_threshold)]
    report = Report(metrics + [ValueDrift(column=column) for column in columns], include_tests=True)
    # Evidently's dataset drift metric calls np.corrcoef, which divides by zero for a constant column.
    with np.errstate(divide="ignore", invalid="ignore"):
        return report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def _column_results(snapshot: dict, columns: list[str]) -> dict[str, dict]:
    """Read each column's drift score, method and threshold and its drift test from a snapshot dict."""
    drift_metrics = {
        metric["id"]: metric for metric in snapshot["metrics"] if metric["config"].get("type") == _VALUE_DRIFT_TYPE
    }
    drifted_by_metric = {
        test["metric_config"]["metric_id"]: test["status"] == _FAILED_TEST_STATUS
        for test in snapshot["tests"]
        if test["metric_config"]["metric_id"] in drift_metrics
    }
    results: dict[str, dict] = {}
    for metric_id, metric in drift_metrics.items():
        column = metric["config"]["column"]
        if metric_id not in drifted_by_metric:
            raise RuntimeError(f"Evidently returned no drift test for column {column!r}; the snapshot format changed")
        results[column] = {
            "stat_test": metric["config"]["method"],
            "drift_score": float(metric["value"]),
            "threshold": float(metric["config"]["threshold"]),
            "drifted": drifted_by_metric[metric_id],
            "note": "",
        }
    absent = [column for column in columns if column not in results]
    if absent:
        raise RuntimeError(f"Evidently returned no drift result for columns {absent}; the snapshot format changed")
    return results


def _write_html(snapshot, path: Path, results: dict[str, dict]) -> Path:
    """Write Evidently's HTML report to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if snapshot is not None:
            snapshot.save_html(tmp_name)
        else:
            Path(tmp_name).write_text(_no_test_html(results), encoding="utf-8")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _no_test_html(results: dict[str, dict]) -> str:
    """Return a small HTML page for a check where no column had values to test."""
    from html import escape

    items = "".join(f"<li>{escape(column)}: {escape(result['note'])}</li>" for column, result in results.items())
    return f"<!doctype html><html><body><h1>Drift check</h1><p>No column could be tested.</p><ul>{items}</ul></body></html>\n"
