"""`freshrank demo` and the summaries the CLI prints after runs of the daily loop."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from freshrank.config import Settings, save_settings
from freshrank.errors import FreshrankError
from freshrank.increments import landed_days
from freshrank.records import read_record
from freshrank.warehouse import partition_rows

logger = logging.getLogger(__name__)

DEMO_SHOP = {"users": 400, "items": 250, "seed": 7, "start": date(2024, 1, 1)}


def prepare_landing(settings: Settings, days: int, source: tuple[str, Path] | None, console: Console) -> list[date]:
    """Fill the landing folder (synthetic shop or an imported dataset) and return the days to replay."""
    landed = landed_days(settings.landing_dir)
    if len(landed) < days:
        if source is None:
            from freshrank.synthetic import ShopSpec, generate_shop

            spec = ShopSpec(days=days, timezone=settings.timezone, **DEMO_SHOP)
            generate_shop(settings.landing_dir, spec)
            console.print(f"generated {days} days of the synthetic shop in {settings.landing_dir}")
        else:
            from freshrank.importers import DEFAULT_TIMEZONES, import_dataset

            fmt, path = source
            zone = DEFAULT_TIMEZONES.get(fmt, settings.timezone)
            report = import_dataset(fmt, Path(path), settings.landing_dir, timezone=zone, max_days=days)
            if zone != settings.timezone:
                save_settings(settings.model_copy(update={"timezone": zone}))
            console.print(f"imported {report.rows_written:,} rows of {fmt} into {len(report.days)} days; set aside {report.set_aside}")
        landed = landed_days(settings.landing_dir)
    return landed[:days]


def run_demo(settings: Settings, days: int, source: tuple[str, Path] | None, console: Console) -> None:
    """Replay ``days`` landed days through the Dagster daily loop, then print the summary and a ranking."""
    from freshrank.config import load_settings
    from orchestration.replay import run_changes

    if days < 1:
        raise FreshrankError(f"--days must be at least 1, not {days}")
    replay_days = prepare_landing(settings, days, source, console)
    settings = load_settings(settings.home)
    with Progress(
        TextColumn("[bold]daily loop"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("", total=len(replay_days))

        def advance(run) -> None:
            state = "ok" if run.success else ("blocked" if run.check_passed is False else "failed")
            progress.update(task, advance=1, description=f"{run.day} {state}")

        runs = run_changes(settings, advance)
        progress.update(task, completed=len(replay_days))
    if not runs:
        console.print("every landed day is already up to date; nothing was recomputed")
    print_summary(settings, [day.isoformat() for day in replay_days], console, runs)
    print_example_ranking(settings, console)
    from freshrank.report import write_report

    report = write_report(settings)
    console.print(f"\nreport with plots: {report.path}")
    console.print(f"Dagster UI: DAGSTER_HOME={settings.dagster_home} FRESHRANK_HOME={settings.home} dagster dev")


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _short(version: str | None) -> str:
    """Shorten a model version to its number (``v0008-2024-01-08`` to ``v0008``)."""
    return version.split("-", 1)[0] if version else "-"


def _check_state(settings: Settings, day: date) -> bool | None:
    path = settings.reports_dir / "validation" / day.isoformat() / "validation.json"
    if not path.exists():
        return None
    return bool(json.loads(path.read_text()).get("success"))


def print_summary(settings: Settings, days: list[str], console: Console, runs=()) -> None:
    """Print one row per day: rows, check, prequential metrics, drift and the champion."""
    table = Table(title="freshrank daily loop")
    for column in ("day", "events", "check", "rows", "AUC", "NDCG@10", "drift", "challenger", "champion"):
        table.add_column(column, justify="right" if column not in ("day", "check", "challenger", "champion") else "left", no_wrap=True)
    for name in days:
        day = date.fromisoformat(name)
        events = read_record(settings, "events", day) or {}
        rows = read_record(settings, "training_rows", day) or {}
        evaluation = (read_record(settings, "prequential_evaluation", day) or {}).get("champion_metrics") or {}
        drift = read_record(settings, "prediction_drift", day) or {}
        deployment = read_record(settings, "deployment", day) or {}
        passed = _check_state(settings, day)
        check = {True: "passed", False: "FAILED", None: "-"}[passed]
        if passed is False:
            table.add_row(name, "-", check, "-", "-", "-", "-", "-", "blocked")
            continue
        deployed = _short(deployment.get("champion"))
        if deployment and not deployment.get("deploy"):
            deployed += " kept"
        table.add_row(
            name,
            _fmt(events.get("rows_published")),
            check,
            _fmt(rows.get("rows")),
            _fmt(evaluation.get("auc")),
            _fmt(evaluation.get("ndcg_at_10")),
            _fmt(drift.get("drift_share"), 2),
            _short(deployment.get("challenger")),
            deployed,
        )
    console.print(table)
    console.print("AUC and NDCG@10: the champion on the day's rows before training on them. kept: the gate refused the challenger.")
    failed = [run for run in runs if not run.success and run.check_passed is not False]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed: {', '.join(r.day for r in failed)}; see the Dagster run logs[/red]")


def print_example_ranking(settings: Settings, console: Console, top: int = 10) -> None:
    """Rank the most popular items of the last day for its most active user, from the online store."""
    from freshrank.warehouse import connect
    from models.serving import rank_items

    with connect(settings.warehouse_path, read_only=True) as con:
        last = con.execute("SELECT max(event_day) FROM partitions").fetchone()[0]
        if last is None:
            return
        user = con.execute(
            "SELECT user_id FROM events WHERE event_day = ? AND user_id IS NOT NULL GROUP BY user_id "
            "ORDER BY count(*) DESC, user_id LIMIT 1",
            [last],
        ).fetchone()
        items = [row[0] for row in con.execute(
            "SELECT item_id FROM events WHERE event_day BETWEEN ? - INTERVAL 6 DAY AND ? "
            "GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT 30",
            [last, last],
        ).fetchall()]
    if user is None or not items:
        return
    try:
        ranking = rank_items(settings, user[0], items)
    except FreshrankError as exc:
        console.print(f"no example ranking: {exc}")
        return
    table = Table(title=f"online ranking for user {user[0]} (model {ranking.model_version})")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for position, (item, item_score) in enumerate(ranking.items[:top], start=1):
        table.add_row(str(position), item, f"{item_score:.4f}")
    console.print(table)


def print_status(settings: Settings, console: Console) -> None:
    """Print each landed partition's data version and state, then the champion and its lineage."""
    from models.lifecycle import registry_for
    from orchestration.replay import dagster_instance
    from orchestration.status import partition_states

    states = partition_states(settings, dagster_instance(settings))
    table = Table(title=f"partitions of {settings.home}")
    for column in ("day", "landed version", "published version", "features computed", "state"):
        table.add_column(column, no_wrap=True)
    counts: dict[str, int] = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
        style = "" if state.state == "up to date" else "yellow"
        table.add_row(state.day, state.landed_version, state.recorded_version or "-", state.computed_at or "-", f"[{style}]{state.state}[/{style}]" if style else state.state)
    console.print(table)
    console.print(", ".join(f"{count} {name}" for name, count in sorted(counts.items())) or "no landed days")
    registry = registry_for(settings)
    champion = registry.champion()
    console.print(f"champion: {champion or 'none deployed'}")
    if champion:
        for record in registry.lineage(champion):
            days = ", ".join(p["day"] for p in record.get("training_partitions", []))
            console.print(f"  {record['version']} ({record['kind']}, {record.get('tree_count')} trees) parent={record.get('parent')} trained on {days}")
