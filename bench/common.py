"""Shared helpers of the benchmark scripts: timing, machine facts, table and JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@contextmanager
def timed(timings: dict, name: str):
    """Add the wall time of the block, in seconds, to ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def machine() -> dict:
    """Return the facts of this machine that a benchmark figure depends on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print rows as a Markdown table, ready to paste into docs/benchmarks.md."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(name: str, payload: dict) -> Path:
    """Write a benchmark's figures to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2, default=str))
    return path
