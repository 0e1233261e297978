"""Exceptions of freshrank, one class per condition; each message names the value and the fix."""

from __future__ import annotations


class FreshrankError(Exception):
    """Base class of every error freshrank raises on purpose."""


class ConfigError(FreshrankError):
    """The settings file is invalid."""


class IncrementError(FreshrankError):
    """An increment file cannot be read or does not fit the canonical schema."""

    def __init__(self, path: object, problem: str, hint: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem}. {hint}")


class MissingIncrementError(FreshrankError):
    """No increment files were delivered for a day."""

    def __init__(self, day: str, folder: object) -> None:
        self.day = day
        super().__init__(
            f"no increment for {day}: {folder} has no .csv, .parquet or .jsonl file. "
            "Deliver the day's events there, or run `freshrank import` first."
        )


class ImportFormatError(FreshrankError):
    """A dataset given to `freshrank import` does not match its declared format."""


class ValidationFailedError(FreshrankError):
    """An increment failed its validation suite and was not published."""


class ModelRegistryError(FreshrankError):
    """A model version or the champion pointer is missing or inconsistent."""


class FeatureStoreError(FreshrankError):
    """The Feast repository or online store is not in the expected state."""


class TrainingDataError(FreshrankError):
    """Training or scoring rows do not fit the model input contract (columns, labels, values)."""


class FeatureMismatchError(FreshrankError):
    """The feature columns given differ from those the model was trained on."""


class DriftInputError(FreshrankError):
    """The reference or current data of a drift check is empty or lacks a usable column."""


class RankingInputError(FreshrankError):
    """A ranking request is invalid: no candidates, duplicates, too many, or an id that is empty or too long."""


class ServingUnavailableError(FreshrankError):
    """The ranking service cannot answer yet: a model, the online store or the candidate source is not loaded."""


class RequestLogError(FreshrankError):
    """A line of the serving request log is not a valid request record."""


class QuarantineError(FreshrankError):
    """A quarantined increment is not found, or a release of it cannot be honoured."""


class ReportError(FreshrankError):
    """A report cannot be written: the home has no landed or processed day up to the requested one."""
