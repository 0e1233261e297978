"""Continued round of one day: XGBoost's own continuation against continuation from stored margins.

Runs on a hard-linked copy of ``--home`` (a home of ``bench_scale.py --home``), so the
home itself is not changed. First the challenger of the day before is trained, which
stores the margins of its parent, as on any normal day. Then the day's challenger is
trained with ``training.store_margins`` off and on, ``--repeats`` times each, with the
store put back to its state after the day before for every run. The two models must
score the day's holdout rows alike.

    python bench/bench_margins.py --home HOME --day 2024-03-30 [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import print_table, write_json  # noqa: E402

from freshrank.config import Settings, load_settings  # noqa: E402
from freshrank.feature_store import model_feature_names  # noqa: E402
from models.lifecycle import train_challenger  # noqa: E402
from models.policy import registry_for, training_and_holdout_rows  # noqa: E402
from models.training import predict  # noqa: E402


def with_store(settings: Settings, enabled: bool) -> Settings:
    return settings.model_copy(update={"training": settings.training.model_copy(update={"store_margins": enabled})})


def holdout_scores(settings: Settings, version: str, day: date) -> np.ndarray:
    _, holdout = training_and_holdout_rows(settings, [day], day)
    return predict(registry_for(settings).load(version), holdout, model_feature_names(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Home whose day and day before are replayed.")
    parser.add_argument("--day", type=date.fromisoformat, required=True, help="Day of a continued round, YYYY-MM-DD.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each variant.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.home.parent) as scratch:
        home = Path(scratch) / "home"
        shutil.copytree(args.home, home, copy_function=os.link)
        shutil.rmtree(home / "margins", ignore_errors=True)
        settings = load_settings(home)
        before = train_challenger(with_store(settings, True), args.day - timedelta(days=1))
        if before.kind != "continued":
            raise SystemExit(f"the round of {args.day - timedelta(days=1)} is a {before.kind} train; pick a day in a chain")
        saved = Path(scratch) / "margins"
        shutil.copytree(home / "margins", saved)
        runs: dict[str, list] = {"off": [], "on": []}
        for _ in range(args.repeats):
            for variant in ("off", "on"):
                shutil.rmtree(home / "margins")
                shutil.copytree(saved, home / "margins")
                runs[variant].append(train_challenger(with_store(settings, variant == "on"), args.day))
        off_scores = holdout_scores(settings, runs["off"][-1].version, args.day)
        on_scores = holdout_scores(settings, runs["on"][-1].version, args.day)

    difference = float(np.max(np.abs(off_scores - on_scores))) if len(off_scores) else 0.0
    rows = []
    for variant, results in runs.items():
        margins = results[-1].base_margins or {}
        rows.append(
            [
                "XGBoost continuation" if variant == "off" else "stored margins",
                statistics.median(result.train_seconds for result in results),
                statistics.median(result.base_margins["seconds"] for result in results) if margins else "-",
                results[-1].training_rows,
                margins.get("stored_rows", "-"),
                margins.get("predicted_rows", "-"),
                margins.get("appended_trees", "-"),
                results[-1].trees,
            ]
        )
    header = ["variant", "train s (median)", "margins s", "rows", "stored rows", "predicted rows", "appended trees", "trees"]
    print_table(f"Continued round of {args.day} ({args.repeats} runs each)", header, rows)
    print(f"\nlargest difference of the holdout scores: {difference:.2e}")
    payload = {"day": args.day.isoformat(), "repeats": args.repeats, "header": header, "rows": rows, "max_score_difference": difference}
    print(f"JSON: {write_json('margins', payload)}")


if __name__ == "__main__":
    main()
