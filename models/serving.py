"""Online ranking: Feast online features for a user and candidate items, scored by the champion."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrank.config import Settings
from freshrank.errors import ModelRegistryError
from freshrank.feature_store import feature_refs, model_feature_names, open_store
from models.lifecycle import registry_for
from models.training import predict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranking:
    """Candidate items ordered by model score, with the model version that scored them."""

    user_id: str
    model_version: str
    items: list[tuple[str, float]]


def online_feature_frame(settings: Settings, user_id: str, item_ids: list[str]) -> pd.DataFrame:
    """Look up one user's, the candidates', and the user x candidate online features.

    Three Feast calls: one for the user, one batched call per entity kind for the
    candidates, because a feature service spanning two entities cannot be read with one
    entity's keys.
    """
    store = open_store(settings)
    user = store.get_online_features(
        features=feature_refs(settings, ("user_features",)), entity_rows=[{"user_id": user_id}]
    ).to_dict()
    items = store.get_online_features(
        features=feature_refs(settings, ("item_features",)), entity_rows=[{"item_id": i} for i in item_ids]
    ).to_dict()
    pairs = store.get_online_features(
        features=feature_refs(settings, ("user_item_features",)),
        entity_rows=[{"user_id": user_id, "item_id": i} for i in item_ids],
    ).to_dict()
    frame = pd.DataFrame({"user_id": [user_id] * len(item_ids), "item_id": item_ids})
    for name, values in user.items():
        if name != "user_id":
            frame[name] = values[0]
    for source in (items, pairs):
        for name, values in source.items():
            if name not in ("user_id", "item_id"):
                frame[name] = values
    columns = model_feature_names(settings)
    frame[columns] = frame[columns].apply(pd.to_numeric, errors="coerce").astype("float64")
    return frame


def rank_items(settings: Settings, user_id: str, item_ids: list[str]) -> Ranking:
    """Rank candidate items for a user with the deployed champion."""
    registry = registry_for(settings)
    version = registry.champion()
    if version is None:
        raise ModelRegistryError("no champion is deployed yet; run the daily loop (`freshrank demo`) first")
    frame = online_feature_frame(settings, user_id, item_ids)
    scores = predict(registry.load(version), frame, model_feature_names(settings))
    order = np.argsort(-scores, kind="stable")
    return Ranking(user_id, version, [(item_ids[i], float(scores[i])) for i in order])
