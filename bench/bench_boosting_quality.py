"""Quality of governed continued boosting against daily full retrains, replayed day by day.

Builds per-day training rows once (see ``quality_data``), then replays the same days
under each strategy. Every strategy trains on the days up to ``d`` and is scored on all
of day ``d + 1``'s rows before anything trains on them (prequential evaluation):

* ``policy``: freshrank's model policy through its own stages (prequential evaluation,
  challenger, shadow full retrain, gate and deployment on a real registry), with the
  settings in ``POLICY``;
* ``full_all``: a full retrain every day on all days so far;
* ``full_window``: a full retrain every day on the trailing ``--window`` days;
* ``continued_naive``: 10 trees a day on the new day only at eta 0.1, never rebased
  (the rule the policy replaces, for reference).

It reports, per strategy, the mean prequential AUC and NDCG@10, the cumulative training
time (CPU seconds of the training calls, and their wall time), the final model size, and
saves the daily curves as PNG under ``docs/img/``. The UCI Online Retail replay uses the
first ``--uci-days`` days with a warm-up of ``--warmup`` days. The synthetic replay plants
a behaviour shift half-way and reports how fast each strategy recovers.

    nice python bench/bench_boosting_quality.py [--dataset uci synthetic] [--uci-days 180]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, print_table, write_json  # noqa: E402
from quality_data import BenchHome, build_synthetic_home, build_uci_home  # noqa: E402

from freshrank.config import Settings, TrainingConfig, load_settings, save_settings  # noqa: E402
from freshrank.feature_store import model_feature_names  # noqa: E402
from freshrank.records import write_record  # noqa: E402
from freshrank.synthetic import ShopSpec  # noqa: E402
from freshrank.training_rows import read_training_rows  # noqa: E402
from models import lifecycle, shadow  # noqa: E402
from models.training import continue_training, model_size_bytes, score_rows, train_full, tree_count  # noqa: E402
from orchestration.deploy import deploy_day  # noqa: E402

logger = logging.getLogger("bench_boosting_quality")

REPO = Path(__file__).resolve().parents[1]
IMG_DIR = REPO / "docs" / "img"
UCI_SOURCE = SHARED_DATA / "uci-online-retail" / "derived" / "online_retail.parquet"
POLICY = TrainingConfig()
"""The policy under test: freshrank's defaults."""
NAIVE = TrainingConfig(trees_per_day=10, continued_learning_rate=0.1)
"""The naive continued rule: 10 trees a day on the new day only, eta 0.1."""


@dataclass
class DayScore:
    """One strategy's prequential metrics on one day."""

    day: str
    auc: float | None
    ndcg_at_10: float | None
    log_loss: float
    trees: int


@dataclass
class StrategyRun:
    """A strategy's daily scores and training costs over a replay."""

    name: str
    label: str
    scores: list[DayScore] = field(default_factory=list)
    train_cpu_seconds: float = 0.0
    train_wall_seconds: float = 0.0
    row_trees: int = 0
    """Training rows times trees grown, summed over all training runs: a cost measure that
    does not depend on the load of the machine."""
    cumulative_cpu: list[float] = field(default_factory=list)
    final_trees: int = 0
    final_bytes: int = 0
    full_trains: int = 0
    notes: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([score.__dict__ for score in self.scores])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> StrategyRun:
        record = json.loads(path.read_text())
        record["scores"] = [DayScore(**score) for score in record["scores"]]
        return cls(**record)

    def summary(self) -> dict:
        frame = self.frame()
        return {
            "strategy": self.name,
            "label": self.label,
            "days": len(frame),
            "mean_auc": float(frame["auc"].mean()),
            "mean_ndcg_at_10": float(frame["ndcg_at_10"].mean()),
            "mean_log_loss": float(frame["log_loss"].mean()),
            "train_cpu_seconds": self.train_cpu_seconds,
            "train_wall_seconds": self.train_wall_seconds,
            "row_trees": self.row_trees,
            "final_trees": self.final_trees,
            "final_model_bytes": self.final_bytes,
            "full_trains": self.full_trains,
            **self.notes,
        }


class RowCache:
    """The bench home's training rows per day, read once and kept in memory."""

    def __init__(self, home: BenchHome) -> None:
        self.settings = home.settings
        self.columns = model_feature_names(home.settings)
        self.rows = {day: read_training_rows(home.settings, [day]) for day in home.days}

    def window(self, days: list[date]) -> pd.DataFrame:
        return pd.concat([self.rows[day] for day in days], ignore_index=True)

    def score(self, booster, day: date) -> DayScore:
        metrics = score_rows(booster, self.rows[day], self.columns, 0.5)
        return DayScore(day.isoformat(), metrics["auc"], metrics["ndcg_at_10"], metrics["log_loss"], tree_count(booster))


def _timed_train(run: StrategyRun, train, rows: int, trees: int) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    booster = train()
    run.train_wall_seconds += time.perf_counter() - wall
    run.train_cpu_seconds += time.process_time() - cpu
    run.row_trees += rows * trees
    return booster


def replay_full(cache: RowCache, days: list[date], warmup: int, window: int | None, name: str, label: str) -> StrategyRun:
    """Replay a daily full retrain on all earlier days (``window`` None) or on the trailing ``window`` days."""
    run = StrategyRun(name, label)
    cfg = POLICY
    booster = None
    for index in range(warmup - 1, len(days) - 1):
        first = 0 if window is None else max(0, index - window + 1)
        rows = cache.window(days[first : index + 1])
        booster = _timed_train(run, lambda: train_full(rows, cache.columns, cfg), len(rows), cfg.full_train_trees)
        run.full_trains += 1
        run.cumulative_cpu.append(run.train_cpu_seconds)
        run.scores.append(cache.score(booster, days[index + 1]))
        logger.info("%s: %s scored %.4f", name, days[index + 1], run.scores[-1].ndcg_at_10 or float("nan"))
    run.final_trees, run.final_bytes = tree_count(booster), model_size_bytes(booster)
    return run


def replay_naive(cache: RowCache, days: list[date], warmup: int) -> StrategyRun:
    """Replay continued boosting on the new day only, 10 trees at eta 0.1, from one full train."""
    run = StrategyRun("continued_naive", "continued, 10 trees a day on the new day, never rebased")
    first_window = days[max(0, warmup - POLICY.full_train_window_days) : warmup]
    rows = cache.window(first_window)
    booster = _timed_train(run, lambda: train_full(rows, cache.columns, POLICY), len(rows), POLICY.full_train_trees)
    run.full_trains = 1
    run.cumulative_cpu.append(run.train_cpu_seconds)
    run.scores.append(cache.score(booster, days[warmup]))
    for index in range(warmup, len(days) - 1):
        rows = cache.rows[days[index]]
        parent = booster
        booster = _timed_train(run, lambda: continue_training(parent, rows, cache.columns, NAIVE), len(rows), NAIVE.trees_per_day)
        run.cumulative_cpu.append(run.train_cpu_seconds)
        run.scores.append(cache.score(booster, days[index + 1]))
    run.final_trees, run.final_bytes = tree_count(booster), model_size_bytes(booster)
    return run


def policy_home(home: BenchHome, work_dir: Path, training: TrainingConfig) -> Settings:
    """Make a fresh home for the policy replay that shares the bench home's warehouse and rows.

    The warehouse and the training rows are linked, not copied; the registry and the
    records start empty.
    """
    target = work_dir / "runs" / f"{home.name}-policy"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("warehouse.duckdb", "training_rows", "offline"):
        os.symlink(home.settings.home / name, target / name)
    settings = load_settings(target).model_copy(update={"timezone": home.settings.timezone, "training": training})
    save_settings(settings)
    return load_settings(target)


def replay_policy(home: BenchHome, work_dir: Path, warmup: int) -> StrategyRun:
    """Replay freshrank's policy through its own stages, in the order the Dagster assets run them."""
    settings = policy_home(home, work_dir, POLICY)
    run = StrategyRun("policy", "freshrank policy (continued rounds, shadow, rebase)")
    triggers: dict[str, int] = {}
    rejected = 0
    days = home.days
    for index in range(warmup - 1, len(days) - 1):
        day, next_day = days[index], days[index + 1]
        challenger = lifecycle.train_challenger(settings, day)
        write_record(settings, "challenger_model", day, challenger.to_dict())
        shadow_result = shadow.shadow_full_retrain(settings, day)
        write_record(settings, shadow.SHADOW_STAGE, day, shadow_result.to_dict())
        decision = deploy_day(settings, day)
        _count_policy_day(run, challenger, shadow_result, triggers)
        rejected += 0 if decision["deploy"] else 1
        # The next day's prequential evaluation is the policy's score: the champion on rows it never saw.
        record = lifecycle.prequential_evaluation(settings, next_day)
        write_record(settings, "prequential_evaluation", next_day, record)
        metrics = record["champion_metrics"]
        trees = lifecycle.registry_for(settings).metadata(record["champion"])["tree_count"]
        run.scores.append(DayScore(next_day.isoformat(), metrics["auc"], metrics["ndcg_at_10"], metrics["log_loss"], trees))
        logger.info("policy: %s %s, champion %s, %s NDCG@10 %.4f", day, challenger.kind, record["champion"], next_day, metrics["ndcg_at_10"] or float("nan"))
    registry = lifecycle.registry_for(settings)
    final = registry.load(registry.champion())
    run.final_trees, run.final_bytes = tree_count(final), model_size_bytes(final)
    run.notes = {"rebases": triggers, "rejected": rejected, "shadows": len(shadow.ShadowStore.of(settings).days()), "home": str(settings.home)}
    return run


def _count_policy_day(run: StrategyRun, challenger, shadow_result, triggers: dict[str, int]) -> None:
    run.train_cpu_seconds += challenger.train_cpu_seconds + shadow_result.train_cpu_seconds
    run.train_wall_seconds += challenger.train_seconds + shadow_result.train_seconds
    run.row_trees += challenger.training_rows * challenger.trees_added + shadow_result.training_rows * shadow_result.trees
    run.cumulative_cpu.append(run.train_cpu_seconds)
    if challenger.kind == "full":
        run.full_trains += 1
    if challenger.rebase:
        trigger = challenger.rebase["trigger"]
        triggers[trigger] = triggers.get(trigger, 0) + 1
    if shadow_result.due and shadow_result.skipped_reason is None:
        run.full_trains += 1


def replay_dataset(home: BenchHome, work_dir: Path, warmup: int, window: int, strategies: list[str], reuse: list[str]) -> list[StrategyRun]:
    """Replay the chosen strategies on one bench home, in the order given.

    A strategy named in ``reuse`` is read from the run saved by an earlier invocation with
    the same home, warm-up, window and training settings, when there is one.
    """
    cache = RowCache(home)
    runs = []
    for name in strategies:
        saved = _saved_run_path(work_dir, home, name, warmup, window)
        if name in reuse and saved.exists():
            runs.append(StrategyRun.load(saved))
            logger.info("%s on %s: reused %s", name, home.name, saved)
            continue
        start = time.perf_counter()
        if name == "policy":
            run = replay_policy(home, work_dir, warmup)
        elif name == "continued_naive":
            run = replay_naive(cache, home.days, warmup)
        elif name == "full_window":
            run = replay_full(cache, home.days, warmup, window, name, f"full retrain every day on the last {window} days")
        else:
            run = replay_full(cache, home.days, warmup, None, name, "full retrain every day on all days so far")
        logger.info("%s on %s took %.0f s", name, home.name, time.perf_counter() - start)
        run.save(saved)
        runs.append(run)
    return runs


def _saved_run_path(work_dir: Path, home: BenchHome, name: str, warmup: int, window: int) -> Path:
    """Return where a strategy's run is saved; the name changes with every setting that changes its result."""
    full_train = POLICY.model_dump(include={"full_train_trees", "learning_rate", "max_depth", "seed", "nthread"})
    settings = {
        "policy": POLICY.model_dump(),
        "continued_naive": {**NAIVE.model_dump(), "first_window": POLICY.full_train_window_days},
        "full_window": {**full_train, "window": window},
        "full_all": full_train,
    }[name]
    digest = hashlib.sha256(json.dumps([home.days[-1].isoformat(), warmup, settings], sort_keys=True).encode()).hexdigest()[:12]
    return work_dir / "runs" / home.name / f"{name}-{digest}.json"


def recovery(run: StrategyRun, shift_day: str, settle_days: int = 14, smooth_days: int = 3) -> dict:
    """Measure how a strategy's NDCG@10 behaves after a planted shift.

    Returns the mean NDCG@10 over the first 7 and 14 days from the shift and the level it
    settles at (the mean over the last ``settle_days`` days). It also returns the days from
    the shift until the ``smooth_days`` rolling mean first reaches 95% of that level.
    """
    frame = run.frame()
    after = frame[frame["day"] >= shift_day].reset_index(drop=True)
    settled = float(after["ndcg_at_10"].tail(settle_days).mean())
    rolling = after["ndcg_at_10"].rolling(smooth_days, min_periods=1).mean()
    reached = np.flatnonzero(rolling.to_numpy() >= 0.95 * settled)
    return {
        "mean_ndcg_first_7_days": float(after["ndcg_at_10"].head(7).mean()),
        "mean_ndcg_first_14_days": float(after["ndcg_at_10"].head(14).mean()),
        "settled_ndcg": settled,
        "days_to_95pct_of_settled": int(reached[0]) if len(reached) else None,
    }


def plot_runs(runs: list[StrategyRun], title: str, path: Path, shift_day: str | None = None) -> Path:
    """Save daily NDCG@10 (7-day mean), AUC, cumulative training CPU time and model size per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 8), constrained_layout=True)
    panels = [
        (axes[0, 0], "ndcg_at_10", "NDCG@10 (7-day rolling mean)"),
        (axes[0, 1], "auc", "AUC (7-day rolling mean)"),
    ]
    for run in runs:
        frame = run.frame()
        days = pd.to_datetime(frame["day"])
        for axis, column, label in panels:
            axis.plot(days, frame[column].rolling(7, min_periods=1).mean(), label=run.name)
            axis.set_title(label)
        axes[1, 0].plot(days, run.cumulative_cpu[: len(days)], label=run.name)
        axes[1, 1].plot(days, frame["trees"], label=run.name)
    axes[1, 0].set_title("cumulative training CPU seconds")
    axes[1, 0].set_yscale("log")
    axes[1, 1].set_title("trees in the scoring model")
    for axis in axes.flat:
        if shift_day is not None:
            axis.axvline(pd.Timestamp(shift_day), color="grey", linestyle="--", linewidth=1)
        axis.tick_params(axis="x", labelrotation=30)
    axes[0, 0].legend(loc="lower left", fontsize=8)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def report(name: str, runs: list[StrategyRun], baseline: str = "full_all") -> list[dict]:
    """Print the Markdown table of one dataset and return the summaries with ratios to the baseline."""
    summaries = [run.summary() for run in runs]
    base = next((entry for entry in summaries if entry["strategy"] == baseline), None)
    rows = []
    for entry in summaries:
        if base is not None:
            entry["ndcg_vs_full_all_percent"] = 100.0 * (entry["mean_ndcg_at_10"] / base["mean_ndcg_at_10"] - 1.0)
            entry["cpu_speedup_vs_full_all"] = base["train_cpu_seconds"] / max(entry["train_cpu_seconds"], 1e-9)
            entry["row_tree_speedup_vs_full_all"] = base["row_trees"] / max(entry["row_trees"], 1)
        rows.append(
            [
                entry["label"],
                f"{entry['mean_auc']:.4f}",
                f"{entry['mean_ndcg_at_10']:.4f}",
                f"{entry.get('ndcg_vs_full_all_percent', 0.0):+.2f}%" if base else "-",
                entry["train_cpu_seconds"],
                entry["train_wall_seconds"],
                f"{entry.get('cpu_speedup_vs_full_all', 0.0):.1f}x" if base else "-",
                f"{entry.get('row_tree_speedup_vs_full_all', 0.0):.1f}x" if base else "-",
                entry["final_trees"],
                f"{entry['final_model_bytes'] / 1024:,.0f} KiB",
            ]
        )
    header = ["strategy", "mean AUC", "mean NDCG@10", "NDCG@10 vs full_all", "training CPU s", "training wall s", "CPU s, full_all / this", "rows x trees, full_all / this", "final trees", "final model size"]
    print_table(f"Prequential quality on {name} ({summaries[0]['days']} days)", header, rows)
    return summaries


def run_uci(args: argparse.Namespace, work_dir: Path) -> dict:
    home = build_uci_home(work_dir, UCI_SOURCE, args.uci_days)
    runs = replay_dataset(home, work_dir, args.warmup, args.window, args.strategies, args.reuse)
    summaries = report(f"UCI Online Retail, days {args.warmup + 1} to {len(home.days)}", runs)
    figure = plot_runs(runs, f"UCI Online Retail: prequential metrics after a {args.warmup}-day warm-up", IMG_DIR / "boosting_quality_uci.png")
    return {"home": home.name, "build_seconds": home.build_seconds, "summaries": summaries, "figure": str(figure.relative_to(REPO)), "daily": {run.name: run.frame().to_dict("records") for run in runs}}


def run_synthetic(args: argparse.Namespace, work_dir: Path) -> dict:
    spec = ShopSpec(days=args.synthetic_days, users=args.synthetic_users, items=args.synthetic_items, seed=11)
    shift_index = args.synthetic_days // 2
    home = build_synthetic_home(work_dir, spec, shift_index)
    shift_day = spec.day(shift_index).isoformat()
    runs = replay_dataset(home, work_dir, args.synthetic_warmup, args.window, args.strategies, args.reuse)
    summaries = report(f"the synthetic shop with a shift on {shift_day}", runs)
    recoveries = {run.name: recovery(run, shift_day) for run in runs}
    rows = [[name, *(round(value, 4) if isinstance(value, float) else value for value in entry.values())] for name, entry in recoveries.items()]
    print_table(f"Recovery after the shift on {shift_day}", ["strategy", "mean NDCG@10, first 7 days", "first 14 days", "settled NDCG@10 (last 14 days)", "days to 95% of settled"], rows)
    figure = plot_runs(runs, f"Synthetic shop with a behaviour shift on {shift_day}", IMG_DIR / "boosting_quality_synthetic.png", shift_day)
    return {"home": home.name, "shift_day": shift_day, "summaries": summaries, "recovery": recoveries, "figure": str(figure.relative_to(REPO)), "daily": {run.name: run.frame().to_dict("records") for run in runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=("uci", "synthetic"), default=["uci", "synthetic"], help="Replays to run.")
    parser.add_argument("--strategies", nargs="+", choices=("policy", "continued_naive", "full_window", "full_all"), default=["policy", "continued_naive", "full_window", "full_all"], help="Strategies to replay.")
    parser.add_argument("--reuse", nargs="*", default=[], choices=("policy", "continued_naive", "full_window", "full_all"), help="Strategies to read from an earlier run with the same settings instead of replaying them.")
    parser.add_argument("--uci-days", type=int, default=180, help="Event days of UCI Online Retail to build and replay (the dataset has 305).")
    parser.add_argument("--warmup", type=int, default=60, help="UCI days before the first scored day.")
    parser.add_argument("--window", type=int, default=60, help="Trailing days of the full_window strategy.")
    parser.add_argument("--synthetic-days", type=int, default=120, help="Days of the synthetic shop; the shift is planted half-way.")
    parser.add_argument("--synthetic-users", type=int, default=3000, help="Users of the synthetic shop.")
    parser.add_argument("--synthetic-items", type=int, default=600, help="Items of the synthetic shop.")
    parser.add_argument("--synthetic-warmup", type=int, default=28, help="Synthetic days before the first scored day.")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "freshrank-bench-quality", help="Folder of the built homes; a finished home is reused.")
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("quality_data").setLevel(logging.INFO)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    results: dict = {"args": {key: str(value) for key, value in vars(args).items()}, "policy": POLICY.model_dump()}
    if "uci" in args.dataset:
        results["uci"] = run_uci(args, args.work_dir)
    if "synthetic" in args.dataset:
        results["synthetic"] = run_synthetic(args, args.work_dir)
    path = write_json("boosting_quality", results)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
