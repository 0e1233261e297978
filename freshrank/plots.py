"""PNG plots of the daily loop, drawn with matplotlib's Agg canvas from per-day frames.

Four plots, each over the calendar days of a report (one slot per day, so a missing or
quarantined day shows as a gap or a mark, never as a shorter axis):

* ``prequential_metrics``: the champion's AUC, NDCG@10 and log loss on each day's rows before
  any training on them, with the previous day's challenger beside it. Points are coloured by
  model version, and each champion's first day is labelled with its version.
* ``drift_by_feature``: the daily drift share against its alert threshold, a feature x day
  grid of drifted, not drifted and not tested columns, and the share of checked days on
  which each feature drifted.
* ``rows_per_day``: published rows per day, with quarantined days marked by the rows that
  were rejected.
* ``feature_freshness``: the age in days of the newest feature partition in the online store
  at each day, and the hours between the end of each event day and the write of its features
  to the online store.

The figures never touch ``matplotlib.pyplot``, so rendering does not depend on the process's
matplotlib backend or on a display.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

logger = logging.getLogger(__name__)

PLOT_TITLES: dict[str, str] = {
    "prequential_metrics": "Prequential metrics per model version",
    "drift_by_feature": "Drift per feature over days",
    "rows_per_day": "Rows per day",
    "feature_freshness": "Feature freshness",
}
"""File stem of each plot and its title, in the order a report shows them."""

PREQUENTIAL_METRICS: dict[str, str] = {"auc": "AUC", "ndcg_at_10": "NDCG@10", "log_loss": "log loss"}
"""Metrics of ``prequential_metrics``: record key and axis label."""

CHAMPION = "champion"
PREVIOUS_CHALLENGER = "previous challenger"
DRIFTED = "drifted"
NOT_DRIFTED = "not drifted"
NOT_TESTED = "not tested"
PUBLISHED = "published"
QUARANTINED = "quarantined"
NOT_RUN = "not run"
NO_DELIVERY = "no delivery"

DEFAULT_DPI = 80
"""Pixels per inch of the PNG files. At 80 a plot of a 10-day demo home took 17 to 70 KB, small enough to embed."""

_MAX_DAY_LABELS = 16
_MAX_LATENCY_IN_HOURS = 72.0
"""Largest online-write latency shown in hours; a larger one (a replay of old days) is shown in days."""
_VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_GREY = "#9a9a9a"
_RED = "#d62728"
_BLUE = "#1f77b4"
_DRIFT_STATUS_CODES = {NOT_TESTED: 0, NOT_DRIFTED: 1, DRIFTED: 2}
_DRIFT_COLOURS = ListedColormap(["#e6e6e6", "#cfe8cf", _RED])


@dataclass(frozen=True)
class PlotData:
    """The per-day frames the plots are drawn from; ``day`` columns hold ``datetime.date`` values.

    Days outside ``days`` are ignored, and a day missing from a frame is drawn as a gap.
    """

    days: list[date]
    """Calendar days of the x axis, oldest first, without gaps."""
    metrics: pd.DataFrame
    """Columns ``day``, ``role`` (``champion`` or ``previous challenger``), ``version`` and one
    column per key of ``PREQUENTIAL_METRICS``; one row per model scored on a day."""
    drift_columns: pd.DataFrame
    """Columns ``day``, ``column`` and ``status`` (``drifted``, ``not drifted`` or ``not tested``)."""
    drift_days: pd.DataFrame
    """Columns ``day``, ``drift_share`` and ``threshold`` (fractions of the tested columns),
    ``alert`` and ``per_column`` (False when the day's record lists only the drifted columns)."""
    volume: pd.DataFrame
    """Columns ``day``, ``state`` (``published``, ``quarantined``, ``not run`` or
    ``no delivery``), ``rows_published`` and ``rows_rejected`` (NaN where unknown)."""
    freshness: pd.DataFrame
    """Columns ``day``, ``age_days`` (days between the day and the newest feature partition
    online at it) and ``latency_hours`` (end of the event day to the online write); NaN where unknown."""


def render_plots(
    data: PlotData, folder: Path, dpi: int = DEFAULT_DPI, on_plot: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Render every plot of ``PLOT_TITLES`` as ``<folder>/<name>.png``.

    Args:
        data: Per-day frames of the report.
        folder: Folder of the PNG files; created when missing. Each file is replaced atomically.
        dpi: Pixels per inch of the PNG files.
        on_plot: Called with each plot's name once its file is written.

    Returns:
        Path of each plot by name, in the order of ``PLOT_TITLES``.

    Raises:
        ValueError: ``data.days`` is empty.
    """
    if not data.days:
        raise ValueError("there are no days to plot; the report needs at least one landed or processed day")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    painters = {
        "prequential_metrics": lambda: draw_prequential_metrics(data.metrics, data.days),
        "drift_by_feature": lambda: draw_drift_by_feature(data.drift_columns, data.drift_days, data.days),
        "rows_per_day": lambda: draw_rows_per_day(data.volume, data.days),
        "feature_freshness": lambda: draw_feature_freshness(data.freshness, data.days),
    }
    paths = {}
    for name in PLOT_TITLES:
        paths[name] = save_png(painters[name](), folder / f"{name}.png", dpi)
        if on_plot is not None:
            on_plot(name)
    logger.info("rendered %d plots of %d days into %s", len(paths), len(data.days), folder)
    return paths


def save_png(figure: Figure, path: Path, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``figure`` as a PNG file through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        FigureCanvasAgg(figure)
        figure.savefig(temporary, format="png", dpi=dpi)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# --- Plots ------------------------------------------------------------------------------------


def draw_prequential_metrics(metrics: pd.DataFrame, days: list[date]) -> Figure:
    """Draw the champion's and the previous challenger's daily metrics, one panel per metric."""
    figure = _figure(days, height=1.8 * len(PREQUENTIAL_METRICS) + 0.8)
    axes = figure.subplots(len(PREQUENTIAL_METRICS), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(PLOT_TITLES["prequential_metrics"])
    rows = _within(metrics, days)
    if rows.empty:
        _write_empty_note(axes, days, "No prequential evaluation yet: a champion is scored from the day after its deployment.")
        return figure

    positions = _positions(days)
    versions = sorted(rows["version"].unique())
    colours = {version: _VERSION_COLOURS[index % len(_VERSION_COLOURS)] for index, version in enumerate(versions)}
    styles = {CHAMPION: ("-", "o"), PREVIOUS_CHALLENGER: (":", "^")}
    for axis, (metric, label) in zip(axes, PREQUENTIAL_METRICS.items()):
        for role, (linestyle, marker) in styles.items():
            scored = rows[(rows["role"] == role) & rows[metric].notna()]
            if scored.empty:
                continue
            axis.plot(range(len(days)), _series(scored, metric, days), color=_GREY, linestyle=linestyle, linewidth=1, zorder=1)
            axis.scatter(
                [positions[day] for day in scored["day"]],
                scored[metric],
                c=[colours[version] for version in scored["version"]],
                marker=marker,
                s=30,
                zorder=2,
            )
        axis.set_ylabel(label)
        axis.margins(y=0.2)  # room for the version labels above the points
        axis.grid(axis="y", alpha=0.3)
    _label_champion_changes(axes[0], rows, positions, colours)
    _day_axis(axes[-1], days)
    handles = [
        Line2D([], [], color=_GREY, linestyle="-", marker="o", label="champion, scored before training on the day"),
        Line2D([], [], color=_GREY, linestyle=":", marker="^", label="previous day's challenger"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    return figure


def draw_drift_by_feature(drift_columns: pd.DataFrame, drift_days: pd.DataFrame, days: list[date]) -> Figure:
    """Draw the daily drift share, the feature x day drift grid and each feature's share of drifted days."""
    statuses = _within(drift_columns, days)
    shares = _within(drift_days, days)
    columns = list(dict.fromkeys(statuses["column"])) if not statuses.empty else []
    figure = _figure(days, height=2.4 + 0.16 * max(len(columns), 4))
    figure.suptitle(PLOT_TITLES["drift_by_feature"])
    grid = figure.add_gridspec(2, 2, height_ratios=[1, max(len(columns), 4) / 8], width_ratios=[5, 1])
    share_axis = figure.add_subplot(grid[0, 0])
    if shares.empty:
        _write_empty_note([share_axis], days, "No drift check yet: a check needs a model and earlier days as reference.")
        return figure

    _draw_drift_share(share_axis, shares, days)
    if not columns:
        _write_empty_note([figure.add_subplot(grid[1, 0], sharex=share_axis)], days, "The drift records list no columns.")
        return figure
    grid_axis = figure.add_subplot(grid[1, 0], sharex=share_axis)
    _draw_drift_grid(grid_axis, statuses, columns, days)
    share_by_column_axis = figure.add_subplot(grid[1, 1], sharey=grid_axis)
    _draw_drift_share_by_column(share_by_column_axis, statuses, columns)
    partial = shares[~shares["per_column"].astype(bool)]
    if not partial.empty:
        share_axis.set_title(
            f"{len(partial)} day(s) recorded only their drifted columns; their other columns show as not drifted",
            fontsize=7,
            color="#555555",
        )
    return figure


def draw_rows_per_day(volume: pd.DataFrame, days: list[date]) -> Figure:
    """Draw published rows per day as bars and mark quarantined and not yet processed days."""
    figure = _figure(days, height=3.2)
    axis = figure.add_subplot()
    figure.suptitle(PLOT_TITLES["rows_per_day"])
    rows = _within(volume, days)
    if rows.empty:
        _write_empty_note([axis], days, "No day has been ingested yet.")
        return figure

    x = np.arange(len(days))
    published = _series(rows, "rows_published", days)
    rejected = _series(rows, "rows_rejected", days)
    states = dict(zip(rows["day"], rows["state"]))
    axis.bar(x, np.nan_to_num(published), color=_BLUE, width=0.8, label="rows published")
    quarantined = np.array([states.get(day) == QUARANTINED for day in days])
    if quarantined.any():
        for position in np.flatnonzero(quarantined):
            axis.axvspan(position - 0.5, position + 0.5, color=_RED, alpha=0.12, linewidth=0)
        axis.bar(
            x[quarantined],
            np.nan_to_num(rejected[quarantined]),
            color="none",
            edgecolor=_RED,
            hatch="//",
            width=0.8,
            label="rows rejected (quarantined day)",
        )
    not_run = [position for position, day in enumerate(days) if states.get(day) == NOT_RUN]
    if not_run:
        axis.scatter(not_run, np.zeros(len(not_run)), marker="x", color=_GREY, zorder=3, label="landed, not processed")
    axis.set_ylabel("rows")
    axis.set_ylim(bottom=0)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper left", fontsize=7, framealpha=0.8)
    _day_axis(axis, days)
    return figure


def draw_feature_freshness(freshness: pd.DataFrame, days: list[date]) -> Figure:
    """Draw the age of the newest online features per day and the latency of each day's online write."""
    figure = _figure(days, height=4.2)
    age_axis, latency_axis = figure.subplots(2, 1, sharex=True)
    figure.suptitle(PLOT_TITLES["feature_freshness"])
    rows = _within(freshness, days)
    if rows.empty or rows["age_days"].isna().all():
        _write_empty_note([age_axis, latency_axis], days, "No feature partition has reached the online store yet.")
        return figure

    x = np.arange(len(days))
    ages = _series(rows, "age_days", days)
    stale = np.nan_to_num(ages) > 0
    age_axis.bar(x, np.nan_to_num(ages), color=np.where(stale, _RED, _BLUE), width=0.8)
    age_axis.scatter(x[~np.isnan(ages) & ~stale], np.zeros(int((~np.isnan(ages) & ~stale).sum())), color=_BLUE, s=12, zorder=3)
    age_axis.set_ylabel("age (days)")
    age_axis.set_title("newest feature partition in the online store: 0 = the day's own features", fontsize=8)
    age_axis.set_ylim(bottom=0, top=max(1.0, float(np.nanmax(ages)) + 0.5))
    age_axis.grid(axis="y", alpha=0.3)

    latency = _series(rows, "latency_hours", days)
    known = ~np.isnan(latency)
    unit, divisor = ("hours", 1.0)
    if known.any() and np.nanmax(np.abs(latency[known])) > _MAX_LATENCY_IN_HOURS:
        unit, divisor = ("days", 24.0)
    latency_axis.plot(x, latency / divisor, color=_BLUE, marker="o", linewidth=1)
    latency_axis.set_ylabel(unit)
    latency_axis.set_title(f"{unit} from the end of the event day to the online write", fontsize=8)
    latency_axis.ticklabel_format(axis="y", style="plain", useOffset=False)
    latency_axis.grid(axis="y", alpha=0.3)
    _day_axis(latency_axis, days)
    return figure


# --- Drawing helpers --------------------------------------------------------------------------


def _figure(days: list[date], height: float) -> Figure:
    width = min(16.0, max(8.0, 5.0 + 0.22 * len(days)))
    return Figure(figsize=(width, height), layout="constrained")


def _positions(days: list[date]) -> dict[date, int]:
    return {day: index for index, day in enumerate(days)}


def _within(frame: pd.DataFrame, days: list[date]) -> pd.DataFrame:
    """Return the rows of ``frame`` whose day is one of ``days``."""
    if frame.empty:
        return frame
    return frame[frame["day"].isin(set(days))]


def _series(rows: pd.DataFrame, column: str, days: list[date]) -> np.ndarray:
    """Return ``column`` of ``rows`` on the day axis, NaN on days without a row."""
    values = dict(zip(rows["day"], rows[column]))
    return np.array([np.nan if values.get(day) is None else float(values[day]) for day in days], dtype=float)


def _day_axis(axis, days: list[date]) -> None:
    step = max(1, int(np.ceil(len(days) / _MAX_DAY_LABELS)))
    ticks = list(range(0, len(days), step))
    axis.set_xticks(ticks)
    axis.set_xticklabels([days[index].isoformat() for index in ticks], rotation=45, ha="right", fontsize=7)
    axis.set_xlim(-0.6, len(days) - 0.4)


def _write_empty_note(axes, days: list[date], text: str) -> None:
    for axis in axes:
        axis.set_yticks([])
        _day_axis(axis, days)
    axes[0].text(0.5, 0.5, text, transform=axes[0].transAxes, ha="center", va="center", fontsize=9, color="#555555")


def _label_champion_changes(axis, rows: pd.DataFrame, positions: dict[date, int], colours: dict[str, str]) -> None:
    """Label each champion's first scored day with its short version (``v0005``)."""
    champion = rows[rows["role"] == CHAMPION].sort_values("day")
    metric = next(iter(PREQUENTIAL_METRICS))
    previous = None
    for day, version, value in zip(champion["day"], champion["version"], champion[metric]):
        if version != previous and pd.notna(value):
            axis.annotate(
                version.split("-", 1)[0],
                (positions[day], value),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=7,
                color=colours[version],
            )
        previous = version


def _draw_drift_share(axis, shares: pd.DataFrame, days: list[date]) -> None:
    x = np.arange(len(days))
    values = _series(shares, "drift_share", days)
    alerts = dict(zip(shares["day"], shares["alert"].astype(bool)))
    colours = [_RED if alerts.get(day) else _BLUE for day in days]
    axis.bar(x, np.nan_to_num(values), color=colours, width=0.8)
    threshold = shares["threshold"].dropna()
    if not threshold.empty:
        axis.axhline(float(threshold.iloc[-1]), color=_RED, linestyle="--", linewidth=1, label="alert threshold")
        axis.legend(loc="upper left", fontsize=7, framealpha=0.8)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("drift share")
    axis.tick_params(labelbottom=False)
    axis.grid(axis="y", alpha=0.3)


def _draw_drift_grid(axis, statuses: pd.DataFrame, columns: list[str], days: list[date]) -> None:
    """Draw one cell per feature and day; days without a check stay blank."""
    positions = _positions(days)
    rows = {column: index for index, column in enumerate(columns)}
    codes = np.full((len(columns), len(days)), np.nan)
    for day, column, status in zip(statuses["day"], statuses["column"], statuses["status"]):
        codes[rows[column], positions[day]] = _DRIFT_STATUS_CODES[status]
    axis.imshow(
        np.ma.masked_invalid(codes),
        cmap=_DRIFT_COLOURS,
        vmin=-0.5,
        vmax=2.5,
        aspect="auto",
        interpolation="nearest",
        extent=(-0.5, len(days) - 0.5, len(columns) - 0.5, -0.5),
    )
    axis.set_yticks(range(len(columns)))
    axis.set_yticklabels(columns, fontsize=6)
    _day_axis(axis, days)
    legend = [Patch(color=_DRIFT_COLOURS(code), label=status) for status, code in _DRIFT_STATUS_CODES.items()]
    axis.legend(handles=legend, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, fontsize=7, frameon=False)


def _draw_drift_share_by_column(axis, statuses: pd.DataFrame, columns: list[str]) -> None:
    """Draw, per feature, the share of its tested days on which it drifted."""
    tested = statuses[statuses["status"] != NOT_TESTED]
    drifted = tested["status"].eq(DRIFTED).groupby(tested["column"]).mean()
    values = [float(drifted.get(column, np.nan)) for column in columns]
    axis.barh(range(len(columns)), np.nan_to_num(values), color=_RED, height=0.7)
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of days drifted", fontsize=7)
    axis.tick_params(labelleft=False, labelsize=7)
    axis.grid(axis="x", alpha=0.3)
