"""Named crash points for crash-safety tests: a process can be made to die at a chosen step.

Pipeline code marks the steps where a crash is most likely to leave half-done work with
``crash_point("warehouse.before_commit")``. Normally a crash point does nothing. When the
environment variable ``FRESHRANK_CRASH_AT`` names it, the process ends there with
``os._exit``: no ``finally`` block, ``atexit`` handler or buffered write runs, as after a
``kill -9``. ``FRESHRANK_CRASH_MODE=raise`` raises :class:`InjectedCrash` instead, which
behaves like an ordinary failing step.

``FRESHRANK_CRASH_AT=features.before_replace:2`` crashes the second time the point is
reached in the process, for steps that run once per feature view.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)

CRASH_AT_ENV_VAR = "FRESHRANK_CRASH_AT"
"""Environment variable naming the crash point, optionally followed by ``:N`` (the N-th hit)."""
CRASH_MODE_ENV_VAR = "FRESHRANK_CRASH_MODE"
"""Environment variable choosing how to crash: ``exit`` (default) or ``raise``."""
CRASH_EXIT_CODE = 86
"""Exit status of a process ended by a crash point, distinct from Python's 1 and the CLI's 2."""
CRASH_MESSAGE_PREFIX = "freshrank: injected crash at "
"""Start of the line written to stderr just before the process ends."""

CRASH_POINTS: dict[str, str] = {
    "staging.before_replace": "the staged Parquet file is written under its temporary name, not yet renamed",
    "quality.after_quarantine": "a failed increment is copied to quarantine, its alert not yet raised",
    "warehouse.after_delete": "inside the publish transaction: the day's old rows are deleted, new rows not inserted",
    "warehouse.before_commit": "inside the publish transaction: every row is written, COMMIT not yet run",
    "features.before_replace": "a feature partition is written under its temporary name, not yet renamed",
    "feature_store.after_materialize": "the online store holds the day's rows; the read-back probe has not run",
    "lifecycle.before_register": "the challenger is trained but not yet registered",
    "registry.before_pointer": "deployment: the challenger is registered, the champion pointer not yet moved",
    "registry.after_pointer": "deployment: the champion pointer is moved, the deployment event not yet appended",
}
"""Every crash point in the code, with the state the process leaves behind when it dies there."""

_EXIT_MODE = "exit"
_RAISE_MODE = "raise"
_hits: dict[str, int] = {}
_hits_lock = threading.Lock()


class InjectedCrash(RuntimeError):
    """A crash point fired in ``raise`` mode."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"injected crash at {name!r} ({CRASH_POINTS[name]}); unset {CRASH_AT_ENV_VAR} to run normally")


def crash_point(name: str) -> None:
    """End the process here when ``FRESHRANK_CRASH_AT`` names this point; otherwise do nothing.

    Args:
        name: A key of :data:`CRASH_POINTS`.

    Raises:
        ValueError: ``name`` or the environment variable names an unknown crash point, or the
            mode or hit count is invalid.
        InjectedCrash: The point fired and ``FRESHRANK_CRASH_MODE`` is ``raise``.
    """
    if name not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {name!r}; add it to freshrank.faults.CRASH_POINTS")
    setting = os.environ.get(CRASH_AT_ENV_VAR)
    if not setting:
        return
    target, hit = _parse_setting(setting)
    if target != name:
        return
    with _hits_lock:
        _hits[name] = _hits.get(name, 0) + 1
        count = _hits[name]
    if count != hit:
        return
    mode = os.environ.get(CRASH_MODE_ENV_VAR, _EXIT_MODE)
    if mode == _RAISE_MODE:
        logger.error("raising an injected crash at %s", name)
        raise InjectedCrash(name)
    if mode != _EXIT_MODE:
        raise ValueError(f"{CRASH_MODE_ENV_VAR}={mode!r} is invalid; use {_EXIT_MODE!r} or {_RAISE_MODE!r}")
    # os.write is unbuffered, so the line reaches stderr although os._exit flushes nothing.
    os.write(2, f"{CRASH_MESSAGE_PREFIX}{name} (hit {count})\n".encode())
    os._exit(CRASH_EXIT_CODE)


def _parse_setting(setting: str) -> tuple[str, int]:
    """Split ``name`` or ``name:N`` into the crash point and the 1-based hit that fires it."""
    target, _, hit_text = setting.strip().partition(":")
    if target not in CRASH_POINTS:
        raise ValueError(
            f"{CRASH_AT_ENV_VAR}={setting!r} names no crash point; known points: {', '.join(sorted(CRASH_POINTS))}"
        )
    if not hit_text:
        return target, 1
    if not hit_text.isdigit() or int(hit_text) < 1:
        raise ValueError(f"{CRASH_AT_ENV_VAR}={setting!r}: the hit after ':' must be a positive integer")
    return target, int(hit_text)


def reset_hits() -> None:
    """Forget how often each crash point was reached (for tests that fire points in-process)."""
    with _hits_lock:
        _hits.clear()
