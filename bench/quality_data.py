"""Per-day training rows for the boosting-quality benchmark, built once and reused.

A bench home is built with the pipeline's own stage functions. Dagster, validation and the
online store are left out, because the model benchmark does not need them. Each day is
staged and published to the warehouse, its three feature views are written, and its
training rows are labelled and joined point-in-time with Feast (features as of the day
before). A finished home has
``bench_days.json`` listing its days; a later run with the same arguments reuses it.

Two homes can be built:

* ``uci``: the first N days of UCI Online Retail (purchase-only, popularity-sampled negatives);
* ``synthetic``: the synthetic shop (view, cart and purchase funnel) with a behaviour shift
  planted on one day, see ``shifted_behaviour``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from unittest import mock

from freshrank import synthetic
from freshrank.config import Settings, load_settings, save_settings
from freshrank.features import FEATURE_VIEWS, write_feature_partition
from freshrank.importers import import_dataset
from freshrank.importers.landing import write_day
from freshrank.increments import landed_days
from freshrank.schema import DAY_FORMAT
from freshrank.staging import load_staged, stage_increment
from freshrank.training_rows import build_training_rows, training_rows_path, write_training_rows
from freshrank.warehouse import publish_increment

logger = logging.getLogger(__name__)

DAYS_FILE = "bench_days.json"
"""Written into a bench home when every day's training rows exist; it lists the days."""

SHIFT_SEED_OFFSET = 1000
"""Added to the shop's seed to draw the users' preferences, popularity and favourites after the shift."""
SHIFTED_CART_LOGIT = (-3.0, 0.0, 0.6)
"""View -> cart logit after the shift (before: -4.3, 0.9, 0.6): affinity no longer raises carting."""
SHIFTED_PURCHASE_LOGIT = (0.0, -0.6, 0.5)
"""Cart -> purchase logit after the shift (before: -1.2, 0.3, 0.5): affinity to a category now
lowers the chance to buy, so users buy outside their usual categories."""
SHIFTED_REPEAT_SESSION_SHARE = 0.01
"""Share of repeat-purchase sessions after the shift (0.08 before): users stop rebuying favourites."""


@dataclass(frozen=True)
class BenchHome:
    """A built bench home: its settings and the days that have training rows, oldest first."""

    name: str
    settings: Settings
    days: list[date]
    build_seconds: float


def build_uci_home(work_dir: Path, source: Path, days: int) -> BenchHome:
    """Import the first ``days`` days of UCI Online Retail and build their training rows.

    Args:
        work_dir: Folder of the bench homes; the home is ``<work_dir>/uci-<days>``.
        source: ``online_retail.parquet``.
        days: Number of event days to import (the dataset has 305).

    Returns:
        The built home.
    """
    existing = _finished_uci(work_dir, days)
    if existing is not None:
        return existing
    home = work_dir / f"uci-{days}"
    settings = load_settings(home)
    report = import_dataset("online-retail", source, settings.landing_dir, max_days=days)
    settings = settings.model_copy(update={"timezone": report.timezone})
    save_settings(settings)
    return _build_rows(f"uci-{days}", settings, landed_days(settings.landing_dir))


def build_synthetic_home(work_dir: Path, spec: synthetic.ShopSpec, shift_day: int) -> BenchHome:
    """Generate the synthetic shop with a behaviour shift from day ``shift_day`` on, and build its rows.

    Args:
        work_dir: Folder of the bench homes.
        spec: The shop before the shift.
        shift_day: Index of the first shifted day.

    Returns:
        The built home.
    """
    name = f"synthetic-{spec.days}d-{spec.users}u-{spec.items}i-seed{spec.seed}-shift{shift_day}"
    home = work_dir / name
    existing = _finished(home)
    if existing is not None:
        return existing
    settings = load_settings(home)
    save_settings(settings.model_copy(update={"timezone": spec.timezone}))
    shifted = synthetic.ShopSpec(
        days=spec.days,
        users=spec.users,
        items=spec.items,
        seed=spec.seed + SHIFT_SEED_OFFSET,
        start=spec.start,
        categories=spec.categories,
        events_per_day=spec.events_per_day,
        timezone=spec.timezone,
    )
    for index in range(spec.days):
        if index < shift_day:
            frame = synthetic.generate_day(spec, index)
        else:
            with shifted_behaviour():
                frame = synthetic.generate_day(shifted, index)
        write_day(settings.landing_dir, spec.day(index).strftime(DAY_FORMAT), frame)
    return _build_rows(name, load_settings(home), landed_days(settings.landing_dir))


@contextlib.contextmanager
def shifted_behaviour() -> Iterator[None]:
    """Swap the synthetic shop's funnel constants for the shifted ones while generating a day.

    ``freshrank.synthetic`` reads these module constants on every call, so patching them
    changes how users cart, buy and rebuy without a copy of the generator. Together with
    the new seed (new preferences, popularity and favourites), this changes the mapping
    from history features to purchases, which fresher features alone cannot repair.
    """
    with (
        mock.patch.object(synthetic, "PURCHASE_LOGIT", SHIFTED_PURCHASE_LOGIT),
        mock.patch.object(synthetic, "CART_LOGIT", SHIFTED_CART_LOGIT),
        mock.patch.object(synthetic, "REPEAT_SESSION_SHARE", SHIFTED_REPEAT_SESSION_SHARE),
    ):
        yield


def _finished_uci(work_dir: Path, days: int) -> BenchHome | None:
    """Return the smallest finished UCI home with at least ``days`` days, cut to its first ``days``.

    Day ``d``'s training rows depend on days up to ``d`` only, so a longer home's first
    days are the same as a shorter home's.
    """
    candidates = []
    for marker in work_dir.glob(f"uci-*/{DAYS_FILE}"):
        built = _finished(marker.parent)
        if built is not None and len(built.days) >= days:
            candidates.append(built)
    if not candidates:
        return None
    smallest = min(candidates, key=lambda built: len(built.days))
    return BenchHome(smallest.name, smallest.settings, smallest.days[:days], smallest.build_seconds)


def _finished(home: Path) -> BenchHome | None:
    marker = home / DAYS_FILE
    if not marker.exists():
        return None
    record = json.loads(marker.read_text())
    logger.info("reusing bench home %s (%d days)", home, len(record["days"]))
    return BenchHome(
        record["name"], load_settings(home), [date.fromisoformat(day) for day in record["days"]], record["build_seconds"]
    )


def _build_rows(name: str, settings: Settings, days: list[date]) -> BenchHome:
    """Publish each day, write its features and build its training rows, oldest first.

    Day ``d``'s rows join the features of ``d - 1``, so the days run in order. A day whose
    rows file exists (from an interrupted build) is published again but not relabelled.
    """
    start = time.perf_counter()
    for position, day in enumerate(days, start=1):
        stage_increment(settings, day)
        publish_increment(settings.warehouse_path, load_staged(settings, day), settings.timezone)
        for view in FEATURE_VIEWS:
            write_feature_partition(settings.warehouse_path, settings.offline_dir, view, day, settings.features, settings.zone)
        if not training_rows_path(settings, day).exists():
            rows, _ = build_training_rows(settings, day)
            write_training_rows(settings, day, rows)
        logger.info("%s: built day %s (%d of %d)", name, day, position, len(days))
    seconds = time.perf_counter() - start
    record = {"name": name, "days": [day.isoformat() for day in days], "build_seconds": seconds}
    (settings.home / DAYS_FILE).write_text(json.dumps(record, indent=2))
    return BenchHome(name, settings, days, seconds)
