"""Canonical increment schema shared by importers, ingestion and validation."""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase")
"""Allowed values of ``event_type``, in funnel order."""

REQUIRED_COLUMNS: tuple[str, ...] = ("event_time", "user_id", "item_id", "event_type")
OPTIONAL_COLUMNS: tuple[str, ...] = ("quantity", "price", "category", "session_id")
INCREMENT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

INCREMENT_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".jsonl", ".json")
"""File suffixes read from a landing day folder; other files are ignored."""

DAY_FORMAT = "%Y-%m-%d"
