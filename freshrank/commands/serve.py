"""CLI commands of the ranking service: `serve`, `ab-report` and `catalogue`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from freshrank.cli import HomeOption, app, console
from freshrank.config import load_settings
from freshrank.errors import FreshrankError

CATALOGUE_FORMATS = ("online-retail", "table")


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to bind [default: serving.host, 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, help="TCP port [default: serving.port, 8000]."),
    workers: Optional[int] = typer.Option(None, help="uvicorn worker processes [default: serving.workers, 1]."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Serve rankings over HTTP: POST /rank, GET /recommend/{user_id}, GET /search, /healthz, /metrics."""
    from models.serving import serving_ready
    from models.service import run_service

    settings = load_settings(home)
    problems = serving_ready(settings)
    if problems:
        raise FreshrankError(
            f"{settings.home} cannot be served yet: {'; '.join(problems)}. Run the daily loop (`freshrank demo` or `freshrank run`) first."
        )
    if workers is not None and workers < 1:
        raise typer.BadParameter(f"--workers must be at least 1, not {workers}")
    run_service(settings, host=host, port=port, workers=workers)


@app.command("ab-report")
def ab_report_command(
    horizon_hours: float = typer.Option(168.0, help="Hours after a request in which a purchase counts for it."),
    log: Optional[Path] = typer.Option(None, help="Request log (JSON Lines) [default: HOME/serving.request_log]."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Compare the A/B variants of the request log on the purchases that followed each request."""
    from models.ab import ab_report

    report = ab_report(load_settings(home), horizon_hours=horizon_hours, log_path=log)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"A/B report: purchases within {horizon_hours:g} h of a request ({report.log_path})")
    for column in ("variant", "models", "requests", "users", "conversion", "hit rate", "MRR", "ranked items bought"):
        table.add_column(column, justify="left" if column in ("variant", "models") else "right")
    for outcome in report.variants:
        table.add_row(
            outcome.variant,
            ", ".join(outcome.model_versions),
            f"{outcome.requests:,}",
            f"{outcome.users:,}",
            f"{outcome.conversion_rate:.2%}",
            f"{outcome.hit_rate:.2%}",
            f"{outcome.mean_reciprocal_rank:.4f}",
            f"{outcome.purchased_ranked_items:,}",
        )
    console.print(table)
    console.print(
        "conversion: requests followed by any purchase of the user; hit rate: by a purchase of a ranked item; "
        "MRR: mean of 1/rank of the best-ranked purchased item."
    )
    if report.hit_rate_z is not None:
        console.print(f"treatment - control hit rate: z = {report.hit_rate_z:.2f}, two-sided p = {report.hit_rate_p_value:.4f}")
    if report.users_in_both_variants:
        console.print(f"{report.users_in_both_variants} users appear in both variants: the split changed during the log")
    for note in report.notes:
        console.print(f"note: {note}")


@app.command()
def catalogue(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="online-retail (StockCode, Description) or table (item_id, title[, category])."),
    path: Path = typer.Argument(..., help="Source file (.parquet or .csv; online-retail also .xlsx)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write the item titles that GET /search matches to HOME/serving.catalogue."""
    from models.serving import catalogue_from_online_retail, read_catalogue_file, write_catalogue

    if fmt not in CATALOGUE_FORMATS:
        raise typer.BadParameter(f"FORMAT must be one of {', '.join(CATALOGUE_FORMATS)}, not {fmt!r}")
    settings = load_settings(home)
    frame = catalogue_from_online_retail(path) if fmt == "online-retail" else read_catalogue_file(path)
    written = write_catalogue(settings, frame)
    console.print(f"wrote {len(frame):,} catalogue items to {written}; a running service reads it at the next deployment")
