"""Base margins of continued boosting, kept from one day to the next.

A continued round grows new trees on the residuals of the champion's margin (its raw score
before the sigmoid) on the window's training rows. Given the champion as ``xgb_model``,
XGBoost computes that margin from every tree of the champion, every day, although most
rows and most trees are the same as the day before. On day 90 of the synthetic shop
(1.06M rows, a champion of 308 trees) that took 3.4 s of a 6.4 s continued round.

The margin store keeps, per day of training rows, the margins of the last parent model,
keyed by a hash of each row's user and item. An entry is used only while the day's stored
training rows are unchanged (size and modification time of their Parquet file). Its
model must also lie on the new parent's chain of continued rounds, so that the new parent
is the stored model plus some appended trees. Then only those appended trees are
evaluated. Rows without an entry (the new day, a recomputed day, a
rebase) get the full prediction. The store is a cache: deleting it costs one full
prediction and changes no model beyond float32 rounding of the margins.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from freshrank.config import Settings
from freshrank.training_rows import training_rows_path
from models.registry import ModelRegistry
from models.training import DAY_COLUMN, ITEM_COLUMN, KEY_COLUMNS, USER_COLUMN, sorted_training_arrays

logger = logging.getLogger(__name__)

FORMAT = 1
"""Version of the entry layout; entries of another layout are ignored."""


@dataclass(frozen=True)
class ParentModel:
    """The model a continued round starts from, as the margin store identifies it."""

    booster: xgb.Booster
    version: str
    chain: dict[str, str]
    """Versions whose trees are a prefix of this model's trees, with their ``model_sha256``:
    the model itself and its parents back to the nearest full train."""

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the model's UBJSON, as the registry records it."""
        return self.chain[self.version]

    @property
    def trees(self) -> int:
        """Tree count of the model."""
        return self.booster.num_boosted_rounds()


@dataclass
class MarginStats:
    """Row counts and time of computing the base margins of one continued round."""

    rows: int = 0
    stored_rows: int = 0
    """Rows whose margin came from the store (plus the appended trees)."""
    predicted_rows: int = 0
    """Rows scored with every tree of the parent."""
    appended_trees: int = 0
    """Largest number of appended trees evaluated on stored margins, over all days."""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class MarginStore:
    """One ``.npz`` file per day of training rows under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, day: date) -> Path:
        return self.folder / f"{day.isoformat()}.npz"

    def load(self, day: date) -> tuple[dict, np.ndarray, np.ndarray] | None:
        """Return ``(meta, sorted key hashes, margins)`` of a day, or None without a readable entry."""
        path = self.path(day)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                hashes, margins = data["hashes"], data["margins"]
        except (OSError, ValueError, KeyError) as error:
            logger.warning("margin store: ignoring the unreadable entry %s (%s); its rows are predicted again", path, error)
            return None
        if meta.get("format") != FORMAT or len(hashes) != len(margins):
            return None
        return meta, hashes, margins

    def save(self, day: date, meta: dict, hashes: np.ndarray, margins: np.ndarray) -> None:
        """Write a day's entry atomically: readers see the old entry or the new one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        order = np.argsort(hashes, kind="stable")
        temporary = self.folder / f".{day.isoformat()}.{os.getpid()}.npz"
        with open(temporary, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps({**meta, "format": FORMAT})), hashes=hashes[order], margins=margins[order])
        os.replace(temporary, self.path(day))

    def prune(self, keep: set[date]) -> None:
        """Delete the entries of days outside ``keep`` (days that left the training window)."""
        if not self.folder.is_dir():
            return
        kept = {day.isoformat() for day in keep}
        for path in self.folder.glob("*.npz"):
            if not path.name.startswith(".") and path.stem not in kept:
                path.unlink(missing_ok=True)


def row_key_hashes(keys: pd.DataFrame) -> np.ndarray:
    """Return a 64-bit hash per row of the columns, the same for object and Arrow strings.

    Entries are per day, so the user and item ids identify a row within one.
    """
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)


def appended_tree_margins(booster: xgb.Booster, matrix: np.ndarray, first: int, last: int) -> np.ndarray:
    """Return the summed output of trees ``first`` to ``last - 1`` per row, without the base score."""
    if first >= last or len(matrix) == 0:
        return np.zeros(len(matrix), dtype=np.float32)
    zeros = np.zeros(len(matrix), dtype=np.float32)
    return np.asarray(
        booster.inplace_predict(
            matrix, iteration_range=(first, last), predict_type="margin", validate_features=False, base_margin=zeros
        ),
        dtype=np.float32,
    )


def full_margins(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """Return the parent's margin per row, base score included."""
    if len(matrix) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(booster.inplace_predict(matrix, predict_type="margin", validate_features=False), dtype=np.float32)


def base_margins(
    store: MarginStore,
    parent: ParentModel,
    matrix: np.ndarray,
    hashes: np.ndarray,
    days: np.ndarray,
    fingerprints: dict[date, str],
) -> tuple[np.ndarray, MarginStats]:
    """Return the parent's margin on every row, from the store where it can, and store the result.

    Args:
        store: The margin store of the home.
        parent: The model the round continues from.
        matrix: Float32 features of the rows, in model order.
        hashes: ``row_key_hashes`` of the rows, aligned with ``matrix``.
        days: ISO day of each row, aligned with ``matrix`` and sorted, so that each day's
            rows are one block.
        fingerprints: Fingerprint of each day's stored training rows (``rows_fingerprint``).

    Returns:
        ``(margins, stats)``; the margins are float32, aligned with ``matrix``.
    """
    started = time.perf_counter()
    margins = np.empty(len(matrix), dtype=np.float32)
    stats = MarginStats(rows=len(matrix))
    meta = {"version": parent.version, "model_sha256": parent.model_sha256, "trees": parent.trees}
    for day_text, start, end in _day_blocks(days):
        day = date.fromisoformat(day_text)
        rows = slice(start, end)
        block = _day_margins(store.load(day), parent, matrix[rows], hashes[rows], fingerprints.get(day), stats)
        margins[rows] = block
        store.save(day, {**meta, "rows_fingerprint": fingerprints.get(day)}, hashes[rows], block)
    stats.seconds = time.perf_counter() - started
    return margins, stats


def _day_blocks(days: np.ndarray) -> list[tuple[str, int, int]]:
    """Return ``(day, start, end)`` of each run of equal days in a sorted array."""
    if len(days) == 0:
        return []
    starts = np.concatenate([[0], np.flatnonzero(days[1:] != days[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(days)]])
    return [(str(days[start]), int(start), int(end)) for start, end in zip(starts, ends)]


def _day_margins(
    entry: tuple[dict, np.ndarray, np.ndarray] | None,
    parent: ParentModel,
    matrix: np.ndarray,
    hashes: np.ndarray,
    fingerprint: str | None,
    stats: MarginStats,
) -> np.ndarray:
    """Return the margins of one day's rows: stored ones plus appended trees, the others predicted."""
    block = np.empty(len(matrix), dtype=np.float32)
    found = np.zeros(len(matrix), dtype=bool)
    prefix_trees = _usable_trees(entry, parent, fingerprint)
    if prefix_trees is not None:
        _, stored_hashes, stored_margins = entry
        slots = np.searchsorted(stored_hashes, hashes)
        inside = slots < len(stored_hashes)
        found[inside] = stored_hashes[slots[inside]] == hashes[inside]
        block[found] = stored_margins[slots[found]] + appended_tree_margins(
            parent.booster, matrix[found], prefix_trees, parent.trees
        )
        stats.stored_rows += int(found.sum())
        stats.appended_trees = max(stats.appended_trees, parent.trees - prefix_trees)
    missing = ~found
    block[missing] = full_margins(parent.booster, matrix[missing])
    stats.predicted_rows += int(missing.sum())
    return block


def _usable_trees(entry: tuple[dict, np.ndarray, np.ndarray] | None, parent: ParentModel, fingerprint: str | None) -> int | None:
    """Return the stored model's tree count if its margins can be extended to the parent's, else None."""
    if entry is None or fingerprint is None:
        return None
    meta = entry[0]
    if meta.get("rows_fingerprint") != fingerprint:
        return None
    if parent.chain.get(meta.get("version")) != meta.get("model_sha256"):
        return None
    trees = meta.get("trees")
    return trees if isinstance(trees, int) and 0 < trees <= parent.trees else None


def rows_fingerprint(path: Path) -> str | None:
    """Return the size and modification time of a stored training-rows file, or None when absent."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return f"{status.st_size}:{status.st_mtime_ns}"


def parent_model(registry: ModelRegistry, version: str, booster: xgb.Booster) -> ParentModel:
    """Describe a registered model as the parent of a continued round, with its chain of prefixes."""
    chain = {record["version"]: record["model_sha256"] for record in registry.lineage(version)}
    return ParentModel(booster, version, chain)


def continued_training_matrix(
    settings: Settings, registry: ModelRegistry, version: str, booster: xgb.Booster, rows: pd.DataFrame, feature_columns: list[str]
) -> tuple[xgb.QuantileDMatrix, MarginStats]:
    """Build the matrix of a continued round with the parent's margins as base margin.

    Entries of days outside the rows' days are deleted afterwards, so the store keeps at
    most the training window.

    NOTE: when ``training.max_training_rows`` samples the earlier days, the kept rows of a
    day change from one round to the next, so most of them miss the store.
    """
    matrix, labels, order = sorted_training_arrays(rows, feature_columns)
    keys = rows[list(KEY_COLUMNS)].iloc[order]
    days = keys[DAY_COLUMN].astype(str).to_numpy()
    window = {date.fromisoformat(day) for day, _, _ in _day_blocks(days)}
    fingerprints = {day: rows_fingerprint(training_rows_path(settings, day)) for day in window}
    store = MarginStore(settings.home / "margins")
    margins, stats = base_margins(
        store, parent_model(registry, version, booster), matrix, row_key_hashes(keys[[USER_COLUMN, ITEM_COLUMN]]), days, fingerprints
    )
    store.prune(window)
    # The parent's trees are not evaluated on these rows, so the new trees need only the
    # histogram bins: the quantized matrix gives the same trees without a copy of the values.
    dtrain = xgb.QuantileDMatrix(
        matrix, label=labels, base_margin=margins, feature_names=list(feature_columns), missing=np.nan
    )
    logger.info(
        "base margins of %d rows: %d from the store (+%d trees), %d predicted, %.2f s",
        stats.rows, stats.stored_rows, stats.appended_trees, stats.predicted_rows, stats.seconds,
    )
    return dtrain, stats
