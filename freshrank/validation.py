"""Validation of a staged daily increment with Great Expectations 1.x.

The suite lives as data in ``expectations/increment_suite.json``. Its thresholds are GE suite
parameters (``{"$PARAMETER": name}``) filled at run time from :class:`ValidationConfig`, the
canonical schema and the validated day, so one suite file serves every day and every setting.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from freshrank.config import ValidationConfig
from freshrank.errors import ConfigError
from freshrank.schema import DAY_FORMAT, EVENT_TYPES, INCREMENT_COLUMNS, REQUIRED_COLUMNS

logger = logging.getLogger(__name__)

# NOTE: the suite is read from the source tree next to the package. A wheel install does not
# ship the expectations/ folder, so pass ``suite_path`` there.
SUITE_PATH = Path(__file__).resolve().parents[1] / "expectations" / "increment_suite.json"
"""Default location of the increment expectation suite."""

ROW_FINGERPRINT_COLUMN = "_row_fingerprint"
"""Column added to the batch for the duplicate check: a 64-bit hash of each row's values."""

USER_SHARE_COLUMN = "_user_event_share"
"""Column added to the batch for the bot check: the fraction of the day's rows made by the row's
``user_id``. It is null for rows without a user."""

DERIVED_COLUMNS: dict[str, str | None] = {ROW_FINGERPRINT_COLUMN: None, USER_SHARE_COLUMN: "user_id"}
"""Columns added to the batch at validation time, with the increment column each is computed from."""

READ_CHECK = "files_readable"
"""Check name of the outcome that reports files which could not be read (no GE run)."""

EXAMPLE_TEXT_CHARACTERS = 200
"""Maximum characters kept of one text value in example rows; a 10 kB id is cut to this length."""

MIN_TRAILING_DAYS = 3
"""Minimum number of trailing daily row counts for the volume check to run."""

EXAMPLE_ROWS = 5
"""Example values or rows kept per failed expectation."""

_CHECK_COLUMNS = "required_columns_present"
_CHECK_DUPLICATES = "duplicate_share"
_CHECK_VOLUME = "row_volume"
_CHECK_EVENT_TIME = "event_time_within_day"
_CHECK_FUTURE = "event_time_not_in_future"
_CHECK_USER_SHARE = "top_user_share"
_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")

# Keys of an expectation's kwargs that select data rather than set a threshold.
_DOMAIN_KWARGS = ("column", "batch_id")


@dataclass
class ExpectationOutcome:
    """Result of one expectation of the suite on one increment.

    ``observed`` and ``threshold`` depend on the check. Column value checks report the count of
    unexpected rows against the accepted values or range. The column check reports the missing
    columns against the required ones, the duplicate check a share against the maximum share,
    and the volume check a row count against its bounds.
    """

    expectation: str
    """Check name from the suite's ``meta.check``, for example ``item_id_not_null``."""
    column: str | None
    """Column the expectation reads; None for table-level checks."""
    success: bool
    observed: object
    threshold: object
    unexpected_examples: list
    """A few offending values or rows (rows as JSON-able dicts)."""
    expectation_type: str = ""
    """Great Expectations type, for example ``expect_column_values_to_not_be_null``."""
    description: str = ""
    skipped: bool = False
    """True when the expectation was not evaluated; ``note`` gives the reason."""
    note: str = ""


@dataclass
class ValidationResult:
    """Outcome of the increment suite on one day's staged increment."""

    day: str
    success: bool
    outcomes: list[ExpectationOutcome]
    ge_result: dict
    """The Great Expectations suite validation result as a JSON-able dict."""
    row_count: int
    cleaning: dict[str, int] = field(default_factory=dict)
    """Repairs made while the increment was read, by kind (see ``freshrank.increments``)."""
    notes: list[str] = field(default_factory=list)
    """One sentence per repair made while reading, naming the file."""
    release: dict | None = None
    """The operator's release of a failed increment; ``success`` is then True while ``failed()``
    still lists the failed expectations."""

    def failed(self) -> list[ExpectationOutcome]:
        """Return the outcomes that did not succeed, in suite order."""
        return [outcome for outcome in self.outcomes if not outcome.success]

    def to_dict(self) -> dict:
        """Return the result as a JSON-able dict."""
        return {
            "day": self.day,
            "success": self.success,
            "row_count": self.row_count,
            "outcomes": [asdict(outcome) for outcome in self.outcomes],
            "ge_result": self.ge_result,
            "cleaning": self.cleaning,
            "notes": self.notes,
            "release": self.release,
        }

    def to_markdown(self) -> str:
        """Render a readable summary: failed checks with observed values, thresholds and examples."""
        failed = self.failed()
        skipped = [outcome for outcome in self.outcomes if outcome.skipped and outcome.success]
        passed = [outcome for outcome in self.outcomes if outcome.success and not outcome.skipped]
        status = "passed" if self.success else "FAILED"
        if self.release is not None:
            status = "FAILED, released for publishing"
        lines = [
            f"# Increment validation {self.day}: {status}",
            "",
            f"{self.row_count} rows; {len(failed)} of {len(self.outcomes)} expectations failed.",
        ]
        if self.release is not None:
            lines += [
                "",
                f"Released by {self.release.get('released_by')} at {self.release.get('released_at')}: "
                f"{self.release.get('reason')}",
            ]
        if failed:
            lines += ["", "## Failed expectations", ""]
            lines += ["| expectation | column | observed | threshold |", "|---|---|---|---|"]
            lines += [
                f"| {o.expectation} | {o.column or '(table)'} | {_cell(o.observed)} | {_cell(o.threshold)} |"
                for o in failed
            ]
            for outcome in failed:
                lines += ["", *_failure_details(outcome)]
        if skipped:
            lines += ["", "## Not evaluated", ""]
            lines += [f"- {o.expectation}: {o.note}" for o in skipped]
        if passed:
            lines += ["", "## Passed expectations", ""]
            lines += [f"- {o.expectation} ({o.column or 'table'})" for o in passed]
        if self.notes:
            lines += ["", "## Repairs made while reading", ""]
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|")


def _failure_details(outcome: ExpectationOutcome) -> list[str]:
    target = f" on `{outcome.column}`" if outcome.column else ""
    lines = [f"### {outcome.expectation}", "", f"`{outcome.expectation_type}`{target}. {outcome.description}"]
    if outcome.note:
        lines += ["", outcome.note]
    if outcome.unexpected_examples:
        lines += ["", "Examples:", ""]
        lines += [f"- `{json.dumps(example, default=str)}`" for example in outcome.unexpected_examples]
    return lines


# --- Great Expectations runtime, shared by the calls of one process ---------------------------


@dataclass
class _GxRuntime:
    """Ephemeral GE context with one pandas dataframe asset; each call passes its own frame."""

    context: Any
    batch_definition: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: _GxRuntime | None = None
_runtime_lock = threading.Lock()


def _gx_runtime() -> _GxRuntime:
    """Return the process-wide GE runtime, creating it on first use.

    The context, data source, asset and batch definition contain no data or results, so calls
    can share them. Every call gets a new batch and a new suite, so results never carry over.
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            # In-memory stores without a data docs site, no usage statistics, no progress bars on stderr.
            project_config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            )
            context = gx.get_context(mode="ephemeral", project_config=project_config)
            asset = context.data_sources.add_pandas("freshrank_staging").add_dataframe_asset("increment")
            _runtime = _GxRuntime(context, asset.add_batch_definition_whole_dataframe("whole_increment"))
            logger.debug("created the ephemeral Great Expectations context")
        return _runtime


def warm_up() -> None:
    """Create the Great Expectations runtime now, so the first validation does not pay for it."""
    _gx_runtime()


@functools.lru_cache(maxsize=4)
def _load_suite_template(path: Path) -> dict:
    try:
        template = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"expectation suite {path} not found; pass suite_path to validate_increment") from exc
    checks = [expectation.get("meta", {}).get("check") for expectation in template["expectations"]]
    if None in checks or len(set(checks)) != len(checks):
        raise ValueError(f"{path}: every expectation needs a unique meta.check name; found {checks}")
    return template


# --- Run-time parameters ----------------------------------------------------------------------


def day_bounds_utc(day: date, timezone: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the UTC instants where ``day`` and the next day start in ``timezone``.

    Each bound is localized on its own calendar date, so a day with a DST change lasts
    23 or 25 hours. A midnight that does not exist moves forward to the first valid instant,
    and an ambiguous midnight takes its first occurrence.

    Raises:
        ConfigError: ``timezone`` is not an IANA timezone name.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown timezone {timezone!r}; use an IANA name such as 'Europe/London'") from exc
    bounds = []
    for calendar_day in (day, day + pd.Timedelta(days=1)):
        local_midnight = pd.Timestamp(calendar_day.isoformat())
        bounds.append(local_midnight.tz_localize(zone, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC"))
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class _VolumeBounds:
    trailing_mean: float
    trailing_days: int
    min_rows: int
    max_rows: int


def _volume_bounds(trailing_row_counts: list[int], config: ValidationConfig) -> _VolumeBounds | None:
    """Return the accepted row count range, or None when too few trailing days exist."""
    if any(count < 0 for count in trailing_row_counts):
        raise ValueError(f"trailing_row_counts must be non-negative; got {trailing_row_counts}")
    window = list(trailing_row_counts)[-config.volume_trailing_days :]
    if len(window) < MIN_TRAILING_DAYS:
        return None
    mean = sum(window) / len(window)
    return _VolumeBounds(
        trailing_mean=mean,
        trailing_days=len(window),
        min_rows=math.ceil(config.min_volume_ratio * mean),
        max_rows=math.floor(config.max_volume_ratio * mean),
    )


# --- Validation -------------------------------------------------------------------------------


def validate_increment(
    frame: pd.DataFrame,
    day: date,
    timezone: str,
    config: ValidationConfig,
    trailing_row_counts: list[int],
    suite_path: Path = SUITE_PATH,
    now: datetime | None = None,
) -> ValidationResult:
    """Validate one day's staged increment against the increment suite.

    A missing column does not raise: the column check fails and names it, and the
    expectations that read an absent column are reported as not evaluated.

    Args:
        frame: The staged increment in the canonical schema (``freshrank.schema``).
        day: Calendar day of the increment in ``timezone``.
        timezone: Business timezone (IANA name) whose calendar days are the partitions.
        config: Thresholds of the checks.
        trailing_row_counts: Row counts of earlier published days, oldest first; the last
            ``config.volume_trailing_days`` of them are the volume reference.
        suite_path: Expectation suite JSON file.
        now: Clock of the future-timestamp check (timezone-aware); default the current time.

    Returns:
        The outcome of every expectation, in suite order, and the raw GE result.

    Raises:
        ConfigError: ``timezone`` is unknown.
        ValueError: ``frame`` already has an internal column (``DERIVED_COLUMNS``), or a
            trailing row count is negative.
    """
    reserved = sorted(set(DERIVED_COLUMNS) & set(frame.columns))
    if reserved:
        raise ValueError(f"the increment must not have a column named {reserved[0]!r}; rename it")
    day_start, next_day_start = day_bounds_utc(day, timezone)
    volume = _volume_bounds(trailing_row_counts, config)
    clock = pd.Timestamp(now or datetime.now(dt_timezone.utc)).tz_convert("UTC")
    parameters: dict[str, Any] = {
        "required_columns": list(REQUIRED_COLUMNS),
        "event_types": list(EVENT_TYPES),
        "day_start": day_start,
        "next_day_start": next_day_start,
        "min_distinct_row_share": 1.0 - config.max_duplicate_share,
        "latest_event_time": clock + pd.Timedelta(seconds=config.max_clock_skew_seconds),
        "max_id_length": config.max_id_length,
        "max_abs_quantity": config.max_abs_quantity,
        "min_quantity": -config.max_abs_quantity,
        "max_price": config.max_price,
        "max_top_user_share": config.max_top_user_share,
    }
    if volume is not None:
        parameters["min_row_count"] = volume.min_rows
        parameters["max_row_count"] = volume.max_rows

    template = _load_suite_template(Path(suite_path))
    batch_frame, fingerprints = _batch_frame(frame)
    planned, not_evaluated = _plan(template, frame, volume, len(trailing_row_counts), config)
    ge_result = _run_suite(template, planned, batch_frame, parameters)

    by_check = {
        result["expectation_config"]["meta"]["check"]: result for result in ge_result["results"]
    }
    context = _OutcomeContext(
        frame=frame, fingerprints=fingerprints, config=config, volume=volume, clock=clock, batch_frame=batch_frame
    )
    outcomes = []
    for expectation in template["expectations"]:
        check = expectation["meta"]["check"]
        if check in not_evaluated:
            outcomes.append(not_evaluated[check])
        else:
            outcomes.append(_outcome_from_result(by_check[check], context))

    result = ValidationResult(
        day=day.strftime(DAY_FORMAT),
        success=all(outcome.success for outcome in outcomes),
        outcomes=outcomes,
        ge_result=ge_result,
        row_count=len(frame),
    )
    logger.info(
        "validated increment %s: %s, %d rows, failed: %s",
        result.day,
        "passed" if result.success else "failed",
        result.row_count,
        [outcome.expectation for outcome in result.failed()] or "none",
    )
    return result


def _batch_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Return a shallow copy of ``frame`` with a 0..n-1 index and the derived columns.

    The copy shares the caller's data, and GE's unexpected row indexes are then positions.
    """
    fingerprints = pd.util.hash_pandas_object(frame, index=False)
    fingerprints.index = pd.RangeIndex(len(frame))
    batch_frame = frame.copy(deep=False)
    batch_frame.index = pd.RangeIndex(len(frame))
    batch_frame[ROW_FINGERPRINT_COLUMN] = fingerprints
    if "user_id" in batch_frame.columns and len(batch_frame):
        users = batch_frame["user_id"]
        rows_per_user = users.map(users.value_counts(dropna=True))
        batch_frame[USER_SHARE_COLUMN] = (rows_per_user / len(batch_frame)).astype("float64")
    return batch_frame, fingerprints




def _plan(
    template: dict, frame: pd.DataFrame, volume: _VolumeBounds | None, trailing_days: int, config: ValidationConfig
) -> tuple[list[dict], dict[str, ExpectationOutcome]]:
    """Split the suite into expectations to run and outcomes decided without running GE.

    An expectation on an absent column is not evaluated (the column check reports the absence),
    and neither is the volume check without enough trailing days nor the duplicate check on an
    empty increment, nor the top-user share below ``min_rows_for_user_share`` rows. An
    ``event_time`` column that is not tz-aware fails the day-window check here, because GE
    cannot compare naive and UTC timestamps, and the future check is then not evaluated.
    """
    planned: list[dict] = []
    not_evaluated: dict[str, ExpectationOutcome] = {}
    for expectation in template["expectations"]:
        check = expectation["meta"]["check"]
        column = expectation["kwargs"].get("column")
        source = DERIVED_COLUMNS.get(column, column)
        if source is not None and source not in frame.columns:
            not_evaluated[check] = _decided_outcome(expectation, f"not evaluated: column {source!r} is absent")
        elif check == _CHECK_USER_SHARE and len(frame) < config.min_rows_for_user_share:
            reason = (
                f"skipped: {len(frame)} rows, fewer than min_rows_for_user_share "
                f"({config.min_rows_for_user_share}), so one user's share says little"
            )
            not_evaluated[check] = _decided_outcome(expectation, reason)
        elif check == _CHECK_FUTURE and not isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            not_evaluated[check] = _decided_outcome(expectation, "not evaluated: event_time is not tz-aware")
        elif check == _CHECK_VOLUME and volume is None:
            reason = (
                f"skipped: {trailing_days} trailing daily row counts are known "
                f"and the volume check needs at least {MIN_TRAILING_DAYS}"
            )
            not_evaluated[check] = _decided_outcome(expectation, reason)
        elif check == _CHECK_DUPLICATES and frame.empty:
            not_evaluated[check] = _decided_outcome(expectation, "skipped: the increment has no rows")
        elif check == _CHECK_EVENT_TIME and not isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            outcome = _decided_outcome(
                expectation,
                f"event_time has dtype {frame[column].dtype}; convert it to tz-aware UTC timestamps "
                "(for example pd.to_datetime(values, utc=True)) before validation",
                success=False,
            )
            outcome.observed = str(frame[column].dtype)
            outcome.threshold = "datetime64[ns, UTC]"
            not_evaluated[check] = outcome
        else:
            planned.append(expectation)
    return planned, not_evaluated


def _decided_outcome(expectation: dict, note: str, success: bool = True) -> ExpectationOutcome:
    """Return the outcome of an expectation that GE did not run; ``success`` False marks a failure."""
    column = expectation["kwargs"].get("column")
    return ExpectationOutcome(
        expectation=expectation["meta"]["check"],
        column=DERIVED_COLUMNS.get(column, column),
        success=success,
        observed=None,
        threshold=None,
        unexpected_examples=[],
        expectation_type=expectation["type"],
        description=expectation["meta"].get("description", ""),
        skipped=success,
        note=note,
    )


def _run_suite(template: dict, planned: list[dict], batch_frame: pd.DataFrame, parameters: dict) -> dict:
    """Run the planned expectations on the frame and return GE's result as a JSON-able dict."""
    from great_expectations.core import ExpectationSuite

    suite = ExpectationSuite(
        name=template["name"],
        expectations=copy.deepcopy(planned),
        meta=copy.deepcopy(template.get("meta", {})),
    )
    runtime = _gx_runtime()
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLE_ROWS}
    with runtime.lock:
        batch = runtime.batch_definition.get_batch(batch_parameters={"dataframe": batch_frame})
        try:
            result = batch.validate(suite, expectation_parameters=parameters, result_format=result_format)
        finally:
            _release_batch(batch)
    return result.to_json_dict()


def _release_batch(batch) -> None:
    """Drop the shared execution engine's reference to the batch's frame.

    GE's pandas engine keeps the data of the batches it loaded until the process ends.
    Without this, the frame of a 2.5M-row increment kept about 0.8 GiB after its validation.
    """
    manager = batch.data.execution_engine.batch_manager
    manager.batch_data_cache.clear()
    manager.reset_batch_cache()


# --- From GE results to outcomes --------------------------------------------------------------


@dataclass(frozen=True)
class _OutcomeContext:
    """Data an outcome needs beyond GE's result: the frame for example rows and the settings."""

    frame: pd.DataFrame
    fingerprints: pd.Series
    config: ValidationConfig
    volume: _VolumeBounds | None
    clock: pd.Timestamp
    batch_frame: pd.DataFrame


def _outcome_from_result(result: dict, context: _OutcomeContext) -> ExpectationOutcome:
    config = result["expectation_config"]
    kwargs = config["kwargs"]
    column = kwargs.get("column")
    outcome = ExpectationOutcome(
        expectation=config["meta"]["check"],
        column=DERIVED_COLUMNS.get(column, column),
        success=bool(result["success"]),
        observed=None,
        threshold=None,
        unexpected_examples=[],
        expectation_type=config["type"],
        description=config["meta"].get("description", ""),
    )
    errors = _exception_messages(result.get("exception_info") or {})
    if errors:
        outcome.success = False
        outcome.note = "Great Expectations raised: " + "; ".join(errors)
        return outcome

    details = result.get("result") or {}
    if outcome.expectation == _CHECK_COLUMNS:
        _fill_columns_outcome(outcome, kwargs, details)
    elif outcome.expectation == _CHECK_DUPLICATES:
        _fill_duplicates_outcome(outcome, details, context)
    elif outcome.expectation == _CHECK_VOLUME:
        _fill_volume_outcome(outcome, kwargs, details, context.volume)
    elif outcome.expectation == _CHECK_USER_SHARE:
        _fill_user_share_outcome(outcome, kwargs, details, context)
    else:
        _fill_column_values_outcome(outcome, kwargs, details, context.frame)
        if not outcome.success and outcome.expectation in (_CHECK_EVENT_TIME, _CHECK_FUTURE):
            outcome.note = " ".join(filter(None, [outcome.note, _event_time_diagnosis(outcome, context)]))
    return outcome


def _exception_messages(exception_info: dict) -> list[str]:
    """Collect error messages from GE's exception info, which is either flat or keyed by metric."""
    if "raised_exception" in exception_info:
        entries = [exception_info]
    else:
        entries = [entry for entry in exception_info.values() if isinstance(entry, dict)]
    return [str(entry.get("exception_message")) for entry in entries if entry.get("raised_exception")]


def _fill_columns_outcome(outcome: ExpectationOutcome, kwargs: dict, details: dict) -> None:
    missing = sorted((details.get("details") or {}).get("mismatched", {}).get("missing", []))
    outcome.observed = {"missing_columns": missing}
    outcome.threshold = {"required_columns": list(kwargs["column_set"])}
    outcome.unexpected_examples = missing
    if missing:
        outcome.note = "Missing required columns: " + ", ".join(missing) + "."


def _fill_duplicates_outcome(outcome: ExpectationOutcome, details: dict, context: _OutcomeContext) -> None:
    distinct_share = float(details["observed_value"])
    outcome.observed = round(1.0 - distinct_share, 6)
    outcome.threshold = context.config.max_duplicate_share
    if not outcome.success:
        repeated = context.fingerprints.duplicated(keep="first")
        outcome.note = f"{int(repeated.sum())} of {len(context.frame)} rows repeat an earlier row exactly."
        outcome.unexpected_examples = _example_rows(context.frame, repeated[repeated].index[:EXAMPLE_ROWS])


def _fill_volume_outcome(
    outcome: ExpectationOutcome, kwargs: dict, details: dict, volume: _VolumeBounds | None
) -> None:
    if volume is None:  # _plan skips the volume check without trailing days, so this is a bug.
        raise RuntimeError("the volume check ran without trailing row counts")
    row_count = int(details["observed_value"])
    outcome.threshold = {"min_row_count": kwargs["min_value"], "max_row_count": kwargs["max_value"]}
    if volume.trailing_mean == 0:
        # Every trailing day was empty: the ratio is undefined and only an empty increment passes.
        outcome.observed = {"row_count": row_count, "ratio_to_trailing_mean": None}
        outcome.note = f"The last {volume.trailing_days} published days had no rows."
        return
    ratio = row_count / volume.trailing_mean
    outcome.observed = {"row_count": row_count, "ratio_to_trailing_mean": round(ratio, 4)}
    outcome.note = (
        f"Trailing mean: {volume.trailing_mean:.1f} rows over {volume.trailing_days} days; "
        f"{row_count} rows is {ratio:.2f} x that mean."
    )


def _fill_user_share_outcome(outcome: ExpectationOutcome, kwargs: dict, details: dict, context: _OutcomeContext) -> None:
    users = context.frame["user_id"]
    counts = users.value_counts(dropna=True)
    rows = len(context.frame)
    outcome.threshold = {"max_top_user_share": kwargs["max_value"]}
    if counts.empty:
        outcome.observed = {"top_user": None, "top_user_rows": 0, "share": 0.0}
        return
    top_user, top_rows = str(counts.index[0]), int(counts.iloc[0])
    outcome.observed = {"top_user": _short(top_user), "top_user_rows": top_rows, "share": round(top_rows / rows, 6)}
    if not outcome.success:
        heavy = counts[counts / rows > kwargs["max_value"]]
        outcome.note = (
            f"user_id {_short(top_user)!r} made {top_rows} of {rows} rows ({top_rows / rows:.1%}); "
            f"{len(heavy)} user(s) are over the limit. A bot, a crawler or a test account is likely."
        )
        positions = users.index[(users == top_user).fillna(False).to_numpy()][:EXAMPLE_ROWS]
        outcome.unexpected_examples = _example_rows(context.frame, positions)


def _event_time_diagnosis(outcome: ExpectationOutcome, context: _OutcomeContext) -> str:
    """Name the likely cause of event times outside the day or in the future."""
    times = context.frame["event_time"]
    at_epoch = int((times == _UNIX_EPOCH).sum())
    parts = []
    if at_epoch:
        parts.append(
            f"{at_epoch} row(s) are at 1970-01-01T00:00:00Z, the Unix epoch: a missing timestamp written as 0."
        )
    if outcome.expectation == _CHECK_FUTURE:
        latest = times.max()
        parts.append(
            f"The latest event_time is {latest.isoformat()}, {(latest - context.clock).total_seconds():.0f} s after "
            f"the validation clock {context.clock.isoformat()} (limit: {context.config.max_clock_skew_seconds:g} s)."
        )
    else:
        parts.append(f"event_time ranges from {times.min().isoformat()} to {times.max().isoformat()}.")
    return " ".join(parts)


def _fill_column_values_outcome(outcome: ExpectationOutcome, kwargs: dict, details: dict, frame: pd.DataFrame) -> None:
    unexpected = int(details.get("unexpected_count") or 0)
    outcome.observed = {"unexpected_rows": unexpected}
    outcome.threshold = _column_values_threshold(outcome.expectation_type, kwargs)
    if unexpected:
        element_count = int(details.get("element_count") or 0)
        positions = details.get("partial_unexpected_index_list") or []
        outcome.unexpected_examples = _example_rows(frame, positions[:EXAMPLE_ROWS])
        values = _distinct_examples(frame, outcome.column, positions)
        accepted = ", ".join(f"{key} {json.dumps(value, default=str)}" for key, value in outcome.threshold.items())
        outcome.note = f"{unexpected} of {element_count} rows are unexpected"
        outcome.note += f", for example {values}" if values else ""
        outcome.note += f"; accepted: {accepted}." if accepted else "."


def _distinct_examples(frame: pd.DataFrame, column: str | None, positions: list) -> str:
    """Quote up to three distinct offending values of a column, long text cut short."""
    if column is None or column not in frame.columns or not positions:
        return ""
    shown: list[str] = []
    for value in frame[column].iloc[list(positions)]:
        if pd.isna(value):
            text = "null"
        elif hasattr(value, "isoformat"):
            text = repr(_short(value.isoformat()))
        else:
            text = repr(_short(str(value)))
        if text not in shown:
            shown.append(text)
    return ", ".join(shown[:3])


def _column_values_threshold(expectation_type: str, kwargs: dict) -> dict:
    """Name what a column value expectation accepts, so that a value set reads as allowed or forbidden."""
    if expectation_type == "expect_column_values_to_not_be_null":
        return {"max_null_rows": 0}
    if expectation_type == "expect_column_values_to_be_in_set":
        return {"allowed_values": kwargs["value_set"]}
    if expectation_type == "expect_column_values_to_not_be_in_set":
        return {"forbidden_values": kwargs["value_set"]}
    if expectation_type == "expect_column_values_to_not_match_regex":
        return {"forbidden_pattern": kwargs["regex"]}
    if expectation_type == "expect_column_value_lengths_to_be_between":
        return {"max_length": kwargs.get("max_value")}
    return {key: value for key, value in kwargs.items() if key not in _DOMAIN_KWARGS and value is not None}


def _example_rows(frame: pd.DataFrame, positions: Any) -> list[dict]:
    """Return the rows at ``positions`` as JSON-able dicts, timestamps as ISO strings in UTC.

    Text longer than ``EXAMPLE_TEXT_CHARACTERS`` is cut, so a 10 kB id does not bloat the report.
    """
    rows = frame.iloc[list(positions)]
    records = json.loads(rows.to_json(orient="records", date_format="iso", date_unit="s"))
    return [{key: _short(value) if isinstance(value, str) else value for key, value in record.items()} for record in records]


def _short(text: str) -> str:
    if len(text) <= EXAMPLE_TEXT_CHARACTERS:
        return text
    return f"{text[:EXAMPLE_TEXT_CHARACTERS]}... ({len(text)} characters)"


# --- Reports ----------------------------------------------------------------------------------


def write_validation_report(result: ValidationResult, folder: Path) -> dict[str, Path]:
    """Write ``validation.json`` and ``validation.md`` into ``folder``, each replaced atomically.

    Returns:
        Paths by kind: ``json`` and ``markdown``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "validation.json", "markdown": folder / "validation.md"}
    _write_atomic(paths["json"], json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    _write_atomic(paths["markdown"], result.to_markdown())
    return paths


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, then rename it over ``path``."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --- Increments that could not be read --------------------------------------------------------


def unreadable_result(day: date, read_error: dict, files: list[str]) -> ValidationResult:
    """Return a failed result for an increment whose files could not be read.

    Great Expectations cannot run without rows, so the result contains one outcome,
    ``files_readable``, whose note is the read error: the file, the row or line, the
    column and what to do.

    Args:
        day: The increment's day.
        read_error: ``path``, ``problem`` and ``hint`` of the read error.
        files: Paths of all files of the day.
    """
    outcome = ExpectationOutcome(
        expectation=READ_CHECK,
        column=_column_named_in(read_error["problem"]),
        success=False,
        observed={"file": read_error["path"], "problem": read_error["problem"]},
        threshold="every file is readable and fits the canonical schema",
        unexpected_examples=[],
        expectation_type="freshrank_read_increment",
        description="Every file of the increment can be read and typed into the canonical schema.",
        note=f"{read_error['path']}: {read_error['problem']}. {read_error['hint']}",
    )
    ge_result = {
        "success": False,
        "results": [],
        "statistics": {"evaluated_expectations": 0},
        "note": "Great Expectations did not run: the increment's files could not be read.",
        "files": list(files),
    }
    return ValidationResult(day=day.strftime(DAY_FORMAT), success=False, outcomes=[outcome], ge_result=ge_result, row_count=0)


def _column_named_in(problem: str) -> str | None:
    """Return the canonical column a read error names, when it names exactly one."""
    named = [column for column in INCREMENT_COLUMNS if re.search(rf"\b{column}\b", problem)]
    return named[0] if len(named) == 1 else None
