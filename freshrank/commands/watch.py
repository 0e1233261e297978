"""`freshrank watch`: the landing sensor's logic in one long-running, warm process."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer

from freshrank.cli import HomeOption, _settings, app, console, warn_ignored_landing

logger = logging.getLogger(__name__)


def _warm_up() -> None:
    """Load, before the first day lands, what its steps would load on the way to serving it."""
    import evidently.presets  # noqa: F401  (drift)
    import freshrank.report  # noqa: F401  (daily report)
    from freshrank.validation import warm_up

    warm_up()


@app.command()
def watch(
    interval: float = typer.Option(2.0, help="Seconds between two looks at the landing folder."),
    once: bool = typer.Option(False, help="Look once, run what changed, and exit."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Watch the landing folder and run the daily loop for new and changed days as soon as they land."""
    # The planning is the landing sensor's (content hashes against Dagster's recorded data
    # versions). The runs execute in this process, so Python, Feast, Great Expectations and the
    # Dagster definitions load once instead of once per run; they are recorded in the home's
    # Dagster instance like any other run.
    from orchestration.build import build_definitions
    from orchestration.replay import dagster_instance, run_changes

    settings = _settings(home)
    instance = dagster_instance(settings)
    defs = build_definitions(settings)
    _warm_up()
    console.print(f"watching {settings.landing_dir} every {interval:g} s")
    first = True
    warned: set[str] = set()
    while True:
        started = time.perf_counter()
        warn_ignored_landing(settings, warned)
        # Days interrupted before this process started are completed on the first look. After
        # that, a day whose branch fails waits for the next start instead of rerunning every look.
        runs = run_changes(settings, instance=instance, defs=defs, complete_interrupted=first)
        first = False
        for run in runs:
            state = "ok" if run.success else ("blocked by validation" if run.check_passed is False else "FAILED")
            console.print(f"{run.day}: {state} in {sum(run.step_seconds.values()):.1f} s of steps; {', '.join(run.materialized)}")
        if runs:
            console.print(f"{len(runs)} run(s) in {time.perf_counter() - started:.1f} s")
        if once:
            return
        time.sleep(interval)
