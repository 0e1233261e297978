"""CLI commands of the quarantine: `freshrank quarantine list|show|release`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from freshrank.cli import HomeOption, app, console
from freshrank.config import load_settings
from freshrank.increments import parse_day

quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect quarantined increments, or release one after review.")
app.add_typer(quarantine_app, name="quarantine")


def _day(value: str):
    try:
        return parse_day(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@quarantine_app.command("list")
def list_command(
    day: Optional[str] = typer.Option(None, help="Only this day, YYYY-MM-DD [default: every day]."),
    home: Optional[Path] = HomeOption,
) -> None:
    """List quarantined increments: day, data version, failed checks, files and release state."""
    from freshrank.quality import failed_checks
    from freshrank.staging import list_quarantined

    settings = load_settings(home)
    entries = list_quarantined(settings, _day(day) if day else None)
    if not entries:
        console.print(f"no quarantined increments under {settings.quarantine_dir}")
        return
    published = published_versions(settings)
    table = Table("day", "data version", "quarantined at", "failed checks", "files", "state")
    for entry in entries:
        if not entry.complete:
            table.add_row(entry.day, entry.data_version, "-", "-", "-", "incomplete: validate the day again")
            continue
        state = entry_state(entry, published.get(entry.day))
        files = ", ".join(Path(name).name for name in entry.record.get("files", []))
        table.add_row(
            entry.day, entry.data_version, entry.record.get("quarantined_at", "-"), ", ".join(failed_checks(entry)), files, state
        )
    console.print(table)


def entry_state(entry, published: str | None) -> str:
    """Return the state of a complete quarantine entry, given the data version published for its day."""
    if entry.release:
        return f"released by {entry.release.get('released_by')}"
    if published is not None and published != entry.data_version:
        return f"superseded: version {published} is published"
    return "quarantined"


def published_versions(settings) -> dict[str, str]:
    """Return the data version published for each day in the warehouse, by ``YYYY-MM-DD``."""
    from freshrank.warehouse import partition_rows

    if not settings.warehouse_path.exists():
        return {}
    rows = partition_rows(settings.warehouse_path)
    return {str(day)[:10]: version for day, version in zip(rows["event_day"], rows["data_version"])}


@quarantine_app.command("show")
def show_command(
    day: str = typer.Argument(..., help="Quarantined day, YYYY-MM-DD."),
    version: Optional[str] = typer.Option(None, help="Data version [default: the most recently quarantined]."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Print a quarantined increment's validation summary, its files and its release, if any."""
    from freshrank.quality import select_quarantined
    from freshrank.staging import list_quarantined

    settings = load_settings(home)
    entry = select_quarantined(settings, _day(day), version)
    others = [other.data_version for other in list_quarantined(settings, _day(day)) if other.data_version != entry.data_version]
    console.print(f"[bold]{entry.folder}[/bold]", highlight=False)
    if others:
        console.print(f"other quarantined versions of {day}: {', '.join(others)} (see --version)", highlight=False)
    console.print((entry.folder / "validation.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print("## Files", markup=False)
    for copy in entry.record.get("copies", []):
        console.print(f"- {copy['file']} -> {entry.folder / copy['copy']}", markup=False, highlight=False)
    for skipped in entry.record.get("not_copied", []):
        console.print(f"- {skipped['file']}: not copied, {skipped['reason']}", markup=False, highlight=False)
    for changed in entry.record.get("changed_since_staging", []):
        console.print(f"- {changed}: changed after it was validated; the copy contains the newer bytes", markup=False, highlight=False)
    if entry.release:
        console.print("## Release", markup=False)
        console.print(json.dumps(entry.release, indent=2), markup=False, highlight=False)


@quarantine_app.command("release")
def release_command(
    day: str = typer.Argument(..., help="Quarantined day, YYYY-MM-DD."),
    reason: str = typer.Option(..., help="What was reviewed and why the increment may be published; recorded."),
    version: Optional[str] = typer.Option(None, help="Data version to release [default: the most recently quarantined]."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Force a reviewed increment through: its next validation passes and records this release."""
    from freshrank.quality import release_increment

    settings = load_settings(home)
    release = release_increment(settings, _day(day), reason, version)
    console.print(
        f"released {release['day']} (data version {release['data_version']}) by {release['released_by']}: {release['reason']}",
        highlight=False,
    )
    if release.get("landed_version") != release["data_version"]:
        console.print(
            f"[yellow]warning:[/yellow] the landing folder of {day} now holds data version {release['landed_version']}, "
            "which this release does not cover; that content is validated afresh.",
            highlight=False,
        )
    console.print(f"publish it with `freshrank run --day {release['day']}` (or `freshrank ingest --day {release['day']}`)", highlight=False)
