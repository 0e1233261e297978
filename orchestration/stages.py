"""Stages of one day's run: the online write and the model branch execute concurrently.

A day's assets form two branches once the increment is ingested. The feature views and
the online write need the day's events. The training rows need the day's events and the
feature views of the day before, so the model branch (training rows, prequential
evaluation, challenger, drift) does not wait for the day's features. The deployment
waits for both, so the new model is never served next to yesterday's online features.

``day_stages`` splits a selection into stages from the asset graph, counting only the
dependencies inside one partition (a dependency on the day before is met by an earlier
run). Each stage is a list of branches; ``orchestration.replay`` runs the branches of a
stage as concurrent Dagster runs and the stages one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from dagster import AssetKey, Definitions

ONLINE_WRITE = AssetKey("online_features")
"""The asset whose upstream branch runs next to the model branch."""


class Branch(NamedTuple):
    """Assets of one day that run as one Dagster run."""

    name: str
    """``ingest``, ``online``, ``model`` or ``deploy``; the runs carry it as tag ``freshrank/branch``."""
    assets: frozenset[AssetKey]


def same_day_parents(defs: Definitions) -> dict[AssetKey, set[AssetKey]]:
    """Return each asset's parents within one partition (its own day in the dependency's window)."""
    parents: dict[AssetKey, set[AssetKey]] = {}
    for assets_def in defs.assets or []:
        for spec in assets_def.specs:
            parents[spec.key] = {
                dep.asset_key for dep in spec.deps if getattr(dep.partition_mapping, "end_offset", 0) == 0
            }
    return parents


def _closure(start: Iterable[AssetKey], edges: dict[AssetKey, set[AssetKey]]) -> set[AssetKey]:
    """Return ``start`` and every key reachable from it along ``edges``."""
    found: set[AssetKey] = set()
    todo = list(start)
    while todo:
        key = todo.pop()
        if key not in found:
            found.add(key)
            todo.extend(edges.get(key, ()))
    return found


def day_stages(defs: Definitions, selection: Iterable[AssetKey] | None = None) -> list[list[Branch]]:
    """Split a day's selection into stages of concurrent branches.

    Args:
        defs: The home's definitions.
        selection: The assets to run; default all.

    Returns:
        Up to three stages, empty branches and stages left out:

        1. what both branches need (the increment and the day's events);
        2. the online branch (feature views, online write) and the model branch;
        3. the rest (deployment, shadow, daily report).
    """
    parents = same_day_parents(defs)
    selected = set(parents) if selection is None else set(selection)
    children: dict[AssetKey, set[AssetKey]] = {key: set() for key in parents}
    for key, ups in parents.items():
        for parent in ups:
            children.setdefault(parent, set()).add(key)

    online_upstream = _closure([ONLINE_WRITE], parents)
    after_online = _closure([ONLINE_WRITE], children)
    model = set(parents) - online_upstream - after_online
    common = online_upstream & _closure(model, parents) - model
    online = online_upstream - common
    rest = set(parents) - common - online - model

    stages = [[("ingest", common)], [("online", online), ("model", model)], [("deploy", rest)]]
    result = []
    for stage in stages:
        branches = [Branch(name, frozenset(keys & selected)) for name, keys in stage if keys & selected]
        if branches:
            result.append(branches)
    return result
