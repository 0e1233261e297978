"""Dagster entry point: `dagster dev` (workspace.yaml) loads `defs` for the home in $FRESHRANK_HOME."""

from __future__ import annotations

from orchestration.build import build_definitions

defs = build_definitions()
