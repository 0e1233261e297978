"""Training on a Dask cluster with ``xgboost.dask``, the path beyond one machine.

The same parameters as ``models.training.train_full``; the rows are split into Dask
partitions and each worker builds its part of the histogram. ``scheduler`` is the
address of a running cluster (``tcp://host:8786``); without one, a ``LocalCluster`` of
``workers`` processes is started for the call, which is how the tests exercise it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import xgboost as xgb
import xgboost.dask  # noqa: F401 - registers xgb.dask

from freshrank.config import TrainingConfig
from models.training import KEY_COLUMNS, LABEL_COLUMN, training_params

logger = logging.getLogger(__name__)


def train_full_dask(
    rows: pd.DataFrame,
    feature_columns: Sequence[str],
    cfg: TrainingConfig,
    scheduler: str | None = None,
    workers: int = 2,
    partitions: int = 4,
) -> xgb.Booster:
    """Train a full model with ``xgboost.dask`` and return it as an ordinary booster."""
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    ordered = rows.sort_values(list(KEY_COLUMNS), kind="stable", ignore_index=True)
    features = dd.from_pandas(ordered[list(feature_columns)].astype("float64"), npartitions=partitions)
    labels = dd.from_pandas(ordered[LABEL_COLUMN].astype("float64"), npartitions=partitions)
    params = training_params(cfg, learning_rate=cfg.learning_rate)
    params.pop("nthread", None)
    if scheduler:
        client_context = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client_context = Client(cluster)
    try:
        with client_context as client:
            matrix = xgb.dask.DaskDMatrix(client, features, labels, feature_names=list(feature_columns))
            output = xgb.dask.train(client, params, matrix, num_boost_round=cfg.full_train_trees)
    finally:
        if cluster is not None:
            cluster.close()
    booster = output["booster"]
    logger.info("dask full train: %d rows, %d trees", len(ordered), booster.num_boosted_rounds())
    return booster
