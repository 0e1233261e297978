"""CLI command `freshrank report`: one HTML page with the daily loop's plots, days, quarantine and alerts."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from freshrank.cli import HomeOption, app, console
from freshrank.config import load_settings


def _parse_day(value: Optional[str]) -> Optional[date]:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a day; write it as YYYY-MM-DD", param_hint="--until") from None


@app.command("report")
def report_command(
    until: Optional[str] = typer.Option(
        None, help="Last day to report, YYYY-MM-DD (default: every day); without --output the page goes to HOME/reports/daily/DAY/report.html."
    ),
    output: Optional[Path] = typer.Option(
        None, help="HTML file to write (default: HOME/reports/report.html); the PNG plots go to a plots folder beside it."
    ),
    dpi: int = typer.Option(80, min=30, max=300, help="Resolution of the plots, in pixels per inch."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write one HTML page with the plots, a row per day, the quarantine and the alerts of a home."""
    from freshrank.plots import PLOT_TITLES
    from freshrank.report import write_report

    settings = load_settings(home)
    last_day = _parse_day(until)
    steps = 2 + len(PLOT_TITLES)
    with Progress(
        TextColumn("[bold]report"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("collecting records", total=steps)

        def advance(step: str) -> None:
            progress.update(task, advance=1, description=f"{step} done")

        report = write_report(settings, until=last_day, output=output, dpi=dpi, on_step=advance)
    latest = report.latest
    console.print(
        f"wrote {report.path} ({len(report.days)} days, {report.days[0].day} .. {latest.day}); "
        f"latest day {latest.day}: {latest.state}"
    )
