"""The `freshrank` command line."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from freshrank.config import Settings, load_settings, save_settings
from freshrank.errors import FreshrankError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True, help="Keep an e-commerce ranking model fresh, day by day.")
features_app = typer.Typer(no_args_is_help=True, help="Compute, materialize and look up features.")
app.add_typer(features_app, name="features")
console = Console(width=None if sys.stdout.isatty() else 120)

HomeOption = typer.Option(None, "--home", envvar="FRESHRANK_HOME", help="freshrank home folder [default: ./freshrank_home].")
_state = {"verbose": False}


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs.")) -> None:
    _state["verbose"] = verbose
    if not verbose:
        # Deprecation notices of Feast, ibis and pandas say nothing to a freshrank user.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


def _settings(home: Optional[Path]) -> Settings:
    return load_settings(home)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a day; write it as YYYY-MM-DD") from None


@app.command("import")
def import_command(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="online-retail, otto or complete-journey."),
    path: Path = typer.Argument(..., help="Dataset file (.parquet, .csv, .xlsx or .jsonl, by format)."),
    landing: Optional[Path] = typer.Option(None, help="Landing folder to write day folders into [default: HOME/landing]."),
    timezone: Optional[str] = typer.Option(None, help="Business timezone of the days [default: the format's own]."),
    max_days: Optional[int] = typer.Option(None, help="Write only the first N event days."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Turn a public dataset into daily increments, one folder per event day."""
    from freshrank.importers import DEFAULT_TIMEZONES, import_dataset

    settings = _settings(home)
    zone = timezone or DEFAULT_TIMEZONES.get(fmt)
    report = import_dataset(fmt, path, landing or settings.landing_dir, timezone=zone, max_days=max_days)
    if landing is None and zone and zone != settings.timezone:
        save_settings(settings.model_copy(update={"timezone": zone}))
        console.print(f"business timezone of {settings.home} set to {zone}")
    console.print(f"wrote {report.rows_written:,} rows in {len(report.days)} day folders; set aside: {report.set_aside}")


@app.command()
def generate(
    days: int = typer.Option(14, help="Number of days."),
    users: int = typer.Option(500, help="Number of users."),
    items: int = typer.Option(300, help="Number of items."),
    seed: int = typer.Option(7, help="Random seed; the same seed gives the same files."),
    start: str = typer.Option("2024-01-01", help="First day, YYYY-MM-DD."),
    events_per_day: Optional[int] = typer.Option(None, help="Mean events per day [default: about 2 per user]."),
    landing: Optional[Path] = typer.Option(None, help="Landing folder [default: HOME/landing]."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write a deterministic synthetic shop (view, add-to-cart, purchase funnel) as daily increments."""
    from freshrank.synthetic import ShopSpec, generate_shop

    settings = _settings(home)
    spec = ShopSpec(days=days, users=users, items=items, seed=seed, start=_day(start), events_per_day=events_per_day, timezone=settings.timezone)
    written = generate_shop(landing or settings.landing_dir, spec)
    console.print(f"wrote {len(written)} days of the synthetic shop, {written[0]} .. {written[-1]}")


@app.command()
def ingest(
    day: str = typer.Option(..., help="Event day to load, YYYY-MM-DD."),
    skip_validation: bool = typer.Option(False, help="Publish without the validation suite (not recommended)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Load one day's increment into the warehouse, replacing that day's partition atomically."""
    from freshrank.quality import validate_staged
    from freshrank.staging import load_staged, stage_increment
    from freshrank.warehouse import publish_increment

    settings = _settings(home)
    partition = _day(day)
    stage_increment(settings, partition)
    if not skip_validation:
        outcome = validate_staged(settings, partition)
        if not outcome.result.success:
            console.print(outcome.result.to_markdown())
            raise FreshrankError(f"increment {day} failed validation and was quarantined in {outcome.quarantine}")
    report = publish_increment(settings.warehouse_path, load_staged(settings, partition), settings.timezone)
    console.print_json(data=report.to_dict())


@features_app.command("compute")
def features_compute(day: str = typer.Option(..., help="Day, YYYY-MM-DD."), home: Optional[Path] = HomeOption) -> None:
    """Compute the user, item and user x item feature partitions of a day."""
    from freshrank.features import FEATURE_VIEWS, write_feature_partition

    settings = _settings(home)
    for view in FEATURE_VIEWS:
        written = write_feature_partition(
            settings.warehouse_path, settings.offline_dir, view, _day(day), settings.features, settings.zone, settings.duckdb_memory
        )
        console.print(f"{view}: {written.rows:,} rows -> {written.path}")


@features_app.command("materialize")
def features_materialize(day: str = typer.Option(..., help="Day, YYYY-MM-DD."), home: Optional[Path] = HomeOption) -> None:
    """Write exactly one day's feature rows into the online store and check a sample."""
    from freshrank.feature_store import materialize_day, probe_online

    settings = _settings(home)
    materialize_day(settings, _day(day))
    probe = probe_online(settings, _day(day))
    console.print(f"materialized {day}; read back {probe.values} values of {probe.entities} entities, {len(probe.mismatches)} mismatches")


@features_app.command("user")
def features_user(user_id: str, home: Optional[Path] = HomeOption) -> None:
    """Print a user's online feature values."""
    from freshrank.feature_store import online_features_for

    console.print_json(data=online_features_for(_settings(home), "user_features", {"user_id": user_id}))


@features_app.command("item")
def features_item(item_id: str, home: Optional[Path] = HomeOption) -> None:
    """Print an item's online feature values."""
    from freshrank.feature_store import online_features_for

    console.print_json(data=online_features_for(_settings(home), "item_features", {"item_id": item_id}))


@features_app.command("category")
def features_category(user_id: str, category: str, home: Optional[Path] = HomeOption) -> None:
    """Print a user's online feature values in one category."""
    from freshrank.feature_store import online_features_for

    keys = {"user_id": user_id, "category": category}
    console.print_json(data=online_features_for(_settings(home), "user_category_features", keys))


def warn_ignored_landing(settings: Settings, warned: set[str] | None = None) -> None:
    """Print a warning per landing file or folder that no increment reads.

    With ``warned``, messages in it are skipped and the printed ones are added, so a loop
    warns once per entry.
    """
    from freshrank.increments import ignored_landing_entries

    for message in ignored_landing_entries(settings.landing_dir):
        if warned is None or message not in warned:
            console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
            if warned is not None:
                warned.add(message)


@app.command("run")
def run_command(
    day: Optional[str] = typer.Option(None, help="Run the whole loop for this day, YYYY-MM-DD, changed or not."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Run the daily loop in Dagster for new and changed landed days and what depends on them."""
    from freshrank.demo import print_summary
    from freshrank.errors import MissingIncrementError
    from freshrank.increments import increment_files
    from orchestration.replay import replay, run_changes

    settings = _settings(home)
    warn_ignored_landing(settings)
    if day and not increment_files(settings.landing_dir, _day(day)):
        raise MissingIncrementError(day, settings.landing_dir / day)
    runs = replay(settings, [_day(day)]) if day else run_changes(settings)
    if not runs:
        console.print("every landed day is up to date; nothing to run")
        _print_quarantined(settings)
        return
    for run in runs:
        state = "ok" if run.success else ("blocked by validation" if run.check_passed is False else "FAILED")
        console.print(f"{run.day}: {state}; materialized {', '.join(run.materialized) or 'nothing'}")
    print_summary(settings, sorted({run.day for run in runs}), console, runs)
    blocked = sorted({run.day for run in runs if run.check_passed is False})
    if blocked:
        console.print(
            f"[red]{len(blocked)} day(s) blocked by validation: {', '.join(blocked)}; "
            "see `freshrank quarantine list` and `freshrank alerts`[/red]"
        )
        print_quarantine_reasons(settings, blocked)
    raise typer.Exit(run_exit_code(runs))


def _print_quarantined(settings: Settings) -> None:
    """Print the landed days whose current version is quarantined, which a rerun does not compute."""
    from orchestration.replay import dagster_instance
    from orchestration.status import partition_states

    quarantined = [state.day for state in partition_states(settings, dagster_instance(settings)) if state.state == "quarantined"]
    if quarantined:
        console.print(
            f"[yellow]{len(quarantined)} day(s) stay quarantined until a corrected increment lands: "
            f"{', '.join(quarantined)}[/yellow]"
        )
        print_quarantine_reasons(settings, quarantined)


def print_quarantine_reasons(settings: Settings, days: list[str]) -> None:
    """Print the newest data-quality alert of each day: the failed expectations and the quarantine folder."""
    from freshrank.alerts import read_alerts

    for day in days:
        alerts = read_alerts(settings, kind="data_quality", day=day)
        if alerts:
            console.print(f"  {day}: {alerts[-1]['message']}", highlight=False)


EXIT_RUN_FAILED = 1
"""Exit status of ``freshrank run`` when a run failed (2 is an error printed as one line, as for every command)."""
EXIT_BLOCKED = 3
"""Exit status of ``freshrank run`` when validation quarantined a day and no run failed otherwise."""


def run_exit_code(runs) -> int:
    """Return the exit status of ``freshrank run`` for its runs: 0, ``EXIT_RUN_FAILED`` or ``EXIT_BLOCKED``."""
    if any(not run.success and run.check_passed is not False for run in runs):
        return EXIT_RUN_FAILED
    if any(run.check_passed is False for run in runs):
        return EXIT_BLOCKED
    return 0


@app.command()
def demo(
    days: int = typer.Option(14, help="Number of days to replay."),
    import_: Optional[tuple[str, str]] = typer.Option(
        None, "--import", metavar="FORMAT PATH", help="Replay a public dataset instead of the synthetic shop."
    ),
    home: Optional[Path] = HomeOption,
) -> None:
    """Replay N days through the Dagster daily loop and print a per-day summary and one ranking."""
    from freshrank.demo import run_demo

    source = (import_[0], Path(import_[1])) if import_ else None
    run_demo(_settings(home), days, source, console)


@app.command()
def status(home: Optional[Path] = HomeOption) -> None:
    """Print the partitions, the deployed champion and its lineage."""
    from freshrank.demo import print_status

    settings = _settings(home)
    warn_ignored_landing(settings)
    print_status(settings, console)


@app.command()
def rollback(
    version: Optional[str] = typer.Argument(None, help="Version to serve [default: the champion before the current one]."),
    reason: str = typer.Option("manual rollback", help="Reason recorded in the deployment history."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Move the champion pointer back, atomically."""
    from models.lifecycle import registry_for

    target = registry_for(_settings(home)).rollback(version, reason=reason)
    console.print(f"champion is now {target}")


@app.command()
def lineage(
    version: str = typer.Argument(..., help="Model version, e.g. v0007-2024-01-07."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw lineage records as JSON instead of tables."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Print a model's chain of parents back to its last full train, with partitions, checks, metrics and reports."""
    from models.lineage import (
        describe_lineage,
        gate_text,
        mean_prequential,
        partitions_text,
        rebase_text,
        short_path,
    )

    def metric(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.4f}"

    def value_text(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, dict):
            return ", ".join(f"{key} {value_text(item)}" for key, item in value.items())
        return json.dumps(value)

    settings = _settings(home)
    chain = describe_lineage(settings, version)
    if as_json:
        console.print_json(data=chain)
        return
    summary = Table(title=f"lineage of {version}: {len(chain)} versions back to the full train {chain[-1]['version']}")
    for column in ("version", "kind", "parent", "trees", "rebase", "trained on", "gate", "holdout NDCG@10 (champion)", "prequential NDCG@10"):
        summary.add_column(column, overflow="fold")
    for record in chain:
        holdout = record["metrics"]["holdout"] or {}
        champion = record["metrics"]["champion_holdout"] or {}
        prequential = mean_prequential(record, "ndcg_at_10")
        days = len(record["metrics"]["prequential_as_champion"])
        summary.add_row(
            record["version"],
            record["kind"],
            record["parent"] or "-",
            f"{record['tree_count']} (+{record['trees_added']})" if record["trees_added"] is not None else str(record["tree_count"]),
            rebase_text(record),
            partitions_text(record),
            gate_text(record),
            f"{metric(holdout.get('ndcg_at_10'))} ({metric(champion.get('ndcg_at_10'))})",
            f"{metric(prequential)} over {days} days" if days else "-",
        )
    console.print(summary)
    for record in chain:
        detail = Table(title=f"{record['version']}: training partitions, checks and reports")
        for column in ("entry", "name", "data version", "result", "path"):
            detail.add_column(column, overflow="fold")
        for partition in record["training_partitions"]:
            outcome = partition["validation"]
            result = {True: "validation passed", False: "validation FAILED", None: "no validation recorded"}[outcome.get("passed")]
            if outcome.get("released"):
                result += " (released)"
            detail.add_row("partition", partition["day"], partition["data_version"] or "-", result, short_path(outcome.get("report"), settings.home))
        for check in (record["checks"].get("gate") or {}).get("checks", []):
            result = {True: "passed", False: "FAILED", None: "not checked"}[check["passed"]]
            if check.get("reason"):
                result += f": {check['reason']}"
            elif check.get("threshold") is not None:
                result += f" (observed {value_text(check['observed'])}, threshold {value_text(check['threshold'])})"
            detail.add_row("gate check", check["name"], "", result, "")
        for name, path in record["reports"].items():
            detail.add_row("report", name, "", "", short_path(path, settings.home))
        console.print(detail)


@app.command()
def alerts(
    kind: Optional[str] = typer.Option(None, help="Only this kind: data_quality, drift, check_failed, quarantine_released or webhook_failed."),
    day: Optional[str] = typer.Option(None, help="Only alerts about this day, YYYY-MM-DD."),
    details: bool = typer.Option(False, "--details", help="Also print each alert's numbers and paths."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON Lines, exactly as stored."),
    home: Optional[Path] = HomeOption,
) -> None:
    """List every alert, oldest first: data quality, drift, failed checks, releases and webhook failures."""
    from freshrank.alerts import alerts_path, read_alerts

    settings = _settings(home)
    records = read_alerts(settings, kind=kind, day=_day(day).isoformat() if day else None)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record, default=str, ensure_ascii=False))
        return
    if not records:
        console.print(f"no alerts in {alerts_path(settings)}", highlight=False)
        return
    for record in records:
        console.print(f"{record['time']}  {record['kind']:<19} {record['day']}  {record['message']}", markup=False, highlight=False)
        if details and record.get("details"):
            console.print("    " + json.dumps(record["details"], default=str, ensure_ascii=False), markup=False, highlight=False)


@app.command()
def rank(user_id: str, items: list[str] = typer.Argument(..., help="Candidate item ids."), home: Optional[Path] = HomeOption) -> None:
    """Rank candidate items for a user with the deployed model and online features."""
    from models.serving import rank_items

    ranking = rank_items(_settings(home), user_id, items)
    output = {
        "model_version": ranking.model_version,
        "items": ranking.items,
        "unknown_user": ranking.unknown_user,
        "unknown_item_ids": list(ranking.unknown_item_ids),
    }
    console.print(json.dumps(output, indent=2))


def _register_command_modules() -> None:
    import importlib

    from freshrank.commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(name)


_register_command_modules()


def main() -> None:
    """Run the CLI; an error prints one line with its hint, and the traceback only with --verbose."""
    try:
        app()
    except FreshrankError as exc:
        if _state["verbose"]:
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the CLI's last handler turns a traceback into one line
        if _state["verbose"]:
            raise
        console.print(f"[red]error:[/red] {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)", highlight=False)
        sys.exit(1)
