"""XGBoost training of the purchase model: holdout split, full trains, continued boosting, scoring.

Training rows are a pandas DataFrame with one row per candidate item of one user on one day.
Its columns are ``user_id`` (str), ``item_id`` (str), ``event_day`` (YYYY-MM-DD), ``label``
(1 when the user purchased the item that day, else 0) and numeric features (NaN = unknown).
A query group is (``event_day``, ``user_id``). The model is a binary:logistic booster, so
its scores are purchase probabilities; ranking metrics are computed per group afterwards.

Models are saved as XGBoost UBJSON by the registry and never pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xgboost as xgb

from freshrank.config import TrainingConfig
from freshrank.errors import FeatureMismatchError, TrainingDataError
from models.evaluation import evaluate, group_ranking_metrics

logger = logging.getLogger(__name__)

USER_COLUMN = "user_id"
ITEM_COLUMN = "item_id"
DAY_COLUMN = "event_day"
LABEL_COLUMN = "label"
KEY_COLUMNS: tuple[str, ...] = (DAY_COLUMN, USER_COLUMN, ITEM_COLUMN)
"""Columns that identify a training row; rows are sorted by them before training."""


def training_params(cfg: TrainingConfig, *, learning_rate: float) -> dict:
    """Build the XGBoost parameters of one training run.

    Args:
        cfg: Training settings (tree depth, seed, threads).
        learning_rate: eta of this run: ``cfg.learning_rate`` for a full train,
            ``cfg.continued_learning_rate`` for continued boosting.

    Returns:
        Parameters for ``xgb.train``; they are also what the registry records.
    """
    return {
        "objective": "binary:logistic",
        "eval_metric": ["auc", "logloss"],
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": learning_rate,
        "seed": cfg.seed,
        "nthread": cfg.nthread,
    }


def split_holdout(rows: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into training and holdout rows by user.

    Each user goes wholly to one side, chosen by a BLAKE2b hash of the seed and the user id.
    Unlike Python's salted ``hash``, this gives the same split in every process, and a user
    stays on the same side on every day.

    Args:
        rows: Training rows with a ``user_id`` column.
        share: Expected fraction of users held out, in [0, 1).
        seed: Seed mixed into the hash; another seed gives another split.

    Returns:
        ``(train_rows, holdout_rows)``, both with the original index and row order.

    Raises:
        TrainingDataError: ``user_id`` is missing or null, or ``share`` is outside [0, 1).
    """
    if not 0.0 <= share < 1.0:
        raise TrainingDataError(f"holdout share must be in [0, 1), got {share}; set training.holdout_share")
    _require_columns(rows, [USER_COLUMN], purpose="the holdout split")
    user_ids = rows[USER_COLUMN]
    null_count = int(user_ids.isna().sum())
    if null_count:
        raise TrainingDataError(f"{null_count} training rows have a null user_id; drop or fix them before the split")

    user_strings = user_ids.astype(str)
    unique_users = user_strings.unique()
    held_out_users = {user for user in unique_users if _hash_fraction(user, seed) < share}
    in_holdout = user_strings.isin(held_out_users).to_numpy()

    train_rows = rows.loc[~in_holdout]
    holdout_rows = rows.loc[in_holdout]
    logger.info(
        "holdout split: %d of %d users held out (%d of %d rows)",
        len(held_out_users),
        len(unique_users),
        len(holdout_rows),
        len(rows),
    )
    return train_rows, holdout_rows


def train_full(rows: pd.DataFrame | xgb.DMatrix, feature_columns: Sequence[str], cfg: TrainingConfig) -> xgb.Booster:
    """Train a new model of ``cfg.full_train_trees`` trees at ``cfg.learning_rate``.

    Args:
        rows: Training rows (see the module docstring); both label values must occur. Or
            their ``training_matrix(rows, feature_columns, quantized=True)``, which lets
            the caller free the rows before the training.
        feature_columns: Numeric feature columns, in the order the model will expect them.
        cfg: Training settings.

    Returns:
        The trained booster, whose feature names are ``feature_columns``.

    Raises:
        TrainingDataError: Rows miss a column, a feature is not numeric or is infinite,
            or labels are not 0/1 or all the same.
    """
    dtrain = rows if isinstance(rows, xgb.DMatrix) else training_matrix(rows, feature_columns, quantized=True)
    params = training_params(cfg, learning_rate=cfg.learning_rate)
    booster = xgb.train(params, dtrain, num_boost_round=cfg.full_train_trees)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "full train: %d rows, %d trees, eta %s, train metrics %s",
            dtrain.num_row(),
            tree_count(booster),
            cfg.learning_rate,
            _train_metrics(booster, dtrain),
        )
    return booster


def continue_training(
    champion: xgb.Booster, rows: pd.DataFrame | xgb.DMatrix, feature_columns: Sequence[str], cfg: TrainingConfig
) -> xgb.Booster:
    """Append ``cfg.trees_per_day`` trees to a copy of the champion at ``cfg.continued_learning_rate``.

    The champion object is left unchanged. The new trees fit the residuals of the champion's
    scores on ``rows``, and the champion's base score is kept.

    Args:
        champion: The model to continue from.
        rows: Training rows of the new day(s); both label values must occur. Or their
            ``training_matrix(rows, feature_columns)`` (not quantized).
        feature_columns: Feature columns; they must equal the champion's feature names, in order.
        cfg: Training settings.

    Returns:
        A new booster with ``tree_count(champion) + cfg.trees_per_day`` trees.

    Raises:
        FeatureMismatchError: ``feature_columns`` differ from the champion's features.
        TrainingDataError: The rows do not fit the input contract (see ``train_full``).
    """
    _check_model_features(champion, feature_columns)
    if isinstance(rows, xgb.QuantileDMatrix):
        raise TrainingDataError("continued training needs the exact feature values: build the matrix with quantized=False")
    dtrain = rows if isinstance(rows, xgb.DMatrix) else training_matrix(rows, feature_columns)
    params = training_params(cfg, learning_rate=cfg.continued_learning_rate)
    parent_trees = tree_count(champion)
    booster = xgb.train(params, dtrain, num_boost_round=cfg.trees_per_day, xgb_model=champion.copy())
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "continued training: %d rows, %d + %d trees, eta %s, train metrics %s",
            dtrain.num_row(),
            parent_trees,
            tree_count(booster) - parent_trees,
            cfg.continued_learning_rate,
            _train_metrics(booster, dtrain),
        )
    return booster


def continue_from_margins(
    parent: xgb.Booster, dtrain: xgb.DMatrix, feature_columns: Sequence[str], cfg: TrainingConfig
) -> xgb.Booster:
    """Grow ``cfg.trees_per_day`` trees on the parent's margins and append them to a copy of it.

    This gives the model of ``continue_training`` without evaluating the parent's trees on
    the rows again: ``dtrain`` carries the parent's margin of every row as its base margin
    (see ``models.margins``). The new trees fit the same gradients, so with margins from a
    full prediction the model is the same, tree for tree.

    ``dtrain`` is built from ``sorted_training_arrays``, as a ``DMatrix`` or a
    ``QuantileDMatrix`` (the same trees in less memory). The other arguments, the result
    and the errors are those of ``continue_training``. A ``dtrain`` without a base margin
    raises ``TrainingDataError``.
    """
    _check_model_features(parent, feature_columns)
    if dtrain.get_base_margin().size != dtrain.num_row():
        raise TrainingDataError("continue_from_margins needs the parent's margin of every row as the matrix's base margin")
    params = training_params(cfg, learning_rate=cfg.continued_learning_rate)
    appended = xgb.train(params, dtrain, num_boost_round=cfg.trees_per_day)
    booster = append_trees(parent, appended)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "continued training on stored margins: %d rows, %d + %d trees, eta %s, train metrics %s",
            dtrain.num_row(),
            tree_count(parent),
            tree_count(appended),
            cfg.continued_learning_rate,
            # The appended trees on the base margins score the rows as the whole model does.
            _train_metrics(appended, dtrain),
        )
    return booster


def append_trees(base: xgb.Booster, extra: xgb.Booster) -> xgb.Booster:
    """Return a copy of ``base`` with the trees of ``extra`` appended, through XGBoost's JSON model.

    ``base`` keeps its base score, objective and feature names. ``extra`` must be a model
    of one output and one tree per round, trained on ``base``'s margins.
    """
    base_json = json.loads(base.save_raw("json"))
    extra_model = json.loads(extra.save_raw("json"))["learner"]["gradient_booster"]["model"]
    model = base_json["learner"]["gradient_booster"]["model"]
    if extra_model["gbtree_model_param"]["num_parallel_tree"] != "1" or set(extra_model["tree_info"]) - {0}:
        raise TrainingDataError("append_trees supports models of one output and one tree per round")
    count = len(model["trees"])
    for offset, tree in enumerate(extra_model["trees"]):
        model["trees"].append({**tree, "id": count + offset})
    model["tree_info"].extend(extra_model["tree_info"])
    model["iteration_indptr"].extend(count + end for end in extra_model["iteration_indptr"][1:])
    model["gbtree_model_param"]["num_trees"] = str(len(model["trees"]))
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(base_json).encode()))
    return booster


def predict(booster: xgb.Booster, rows: pd.DataFrame, feature_columns: Sequence[str]) -> np.ndarray:
    """Score rows with a model.

    Args:
        booster: A binary:logistic model.
        rows: Rows with the feature columns (labels and keys are not needed).
        feature_columns: Feature columns; they must equal the model's feature names, in order.

    Returns:
        Purchase probabilities as float64, one per row, in row order.

    Raises:
        FeatureMismatchError: ``feature_columns`` differ from the model's features.
        TrainingDataError: Rows miss a feature column, or a feature is not numeric or is infinite.
    """
    _check_model_features(booster, feature_columns)
    matrix = _feature_matrix(rows, feature_columns, purpose="scoring")
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    scores = booster.inplace_predict(matrix, validate_features=False)
    return np.asarray(scores, dtype=np.float64)


def score_rows(booster: xgb.Booster, rows: pd.DataFrame, feature_columns: Sequence[str], threshold: float) -> dict:
    """Score rows with a model and compute its ranking and threshold metrics.

    Args:
        booster: A binary:logistic model.
        rows: Training rows (see the module docstring); query groups are (``event_day``, ``user_id``).
        feature_columns: The model's feature columns, in order.
        threshold: Operating threshold of precision, recall and F1.

    Returns:
        The metrics of ``models.evaluation.evaluate``, or ``{"rows": 0}`` for no rows.

    Raises:
        FeatureMismatchError: ``feature_columns`` differ from the model's features.
        TrainingDataError: Rows miss a key, label or feature column.
    """
    if rows.empty:
        return {"rows": 0}
    _require_columns(rows, [DAY_COLUMN, USER_COLUMN, LABEL_COLUMN], purpose="scoring")
    scores = predict(booster, rows, feature_columns)
    groups = (rows[DAY_COLUMN].astype(str) + "|" + rows[USER_COLUMN].astype(str)).to_numpy()
    return evaluate(rows[LABEL_COLUMN].to_numpy(), scores, groups, threshold)


GROUP_METRICS: dict[str, str] = {"ndcg_at_10": "ndcg", "recall_at_10": "recall"}
"""Gate metrics that have a value per query group, and their name in ``group_ranking_metrics``."""
"""Metrics that are means over query groups, so a paired per-group comparison applies to them."""


def paired_group_difference(
    challenger: xgb.Booster,
    champion: xgb.Booster,
    rows: pd.DataFrame,
    feature_columns: Sequence[str],
    metric: str,
    threshold: float,
) -> dict | None:
    """Compare two models group by group on the same rows: the mean and standard error of the difference.

    Each query group (``event_day``, ``user_id``) that has a positive gets the metric of
    both models, and the difference is challenger minus champion. The mean of those
    differences equals the difference of the two models' metrics, and its standard error
    says how far noise alone could move it.

    Args:
        challenger: The model under test.
        champion: The model it is compared with.
        rows: Rows neither model trained on.
        feature_columns: The models' feature columns, in order.
        metric: One of ``GROUP_METRICS``.
        threshold: Operating threshold; the group metrics do not use it.

    Returns:
        ``{"metric", "groups", "mean_difference", "standard_error"}``; the standard error is
        None with fewer than two groups. None when ``metric`` is not a group metric or no
        group has a positive.
    """
    if metric not in GROUP_METRICS or rows.empty:
        return None
    labels = rows[LABEL_COLUMN].to_numpy()
    groups = (rows[DAY_COLUMN].astype(str) + "|" + rows[USER_COLUMN].astype(str)).to_numpy()
    name = GROUP_METRICS[metric]
    challenger_values = group_ranking_metrics(labels, predict(challenger, rows, feature_columns), groups)
    champion_values = group_ranking_metrics(labels, predict(champion, rows, feature_columns), groups)
    ranked = challenger_values["ranked"]
    differences = (challenger_values[name] - champion_values[name])[ranked]
    if not len(differences):
        return None
    standard_error = float(np.std(differences, ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else None
    return {
        "metric": metric,
        "groups": len(differences),
        "mean_difference": float(np.mean(differences)),
        "standard_error": standard_error,
    }


def model_size_bytes(booster: xgb.Booster) -> int:
    """Return the size of the model saved as XGBoost UBJSON, the format the registry stores."""
    return len(booster.save_raw("ubj"))


def tree_count(booster: xgb.Booster) -> int:
    """Return the number of trees in a model.

    The models trained here grow one tree per boosting round (one output, no forests),
    so the tree count equals the number of boosted rounds.
    """
    return booster.num_boosted_rounds()


def _hash_fraction(user_id: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _require_columns(rows: pd.DataFrame, columns: Sequence[str], *, purpose: str) -> None:
    missing = [column for column in columns if column not in rows.columns]
    if missing:
        raise TrainingDataError(
            f"rows for {purpose} are missing the columns {missing}; present columns are {list(rows.columns)}. "
            "Build the rows with the same feature set as the model."
        )


def _check_feature_list(feature_columns: Sequence[str]) -> None:
    if len(feature_columns) == 0:
        raise TrainingDataError("feature_columns is empty; give at least one numeric feature column")
    duplicates = sorted(name for name, count in Counter(feature_columns).items() if count > 1)
    if duplicates:
        raise TrainingDataError(f"feature_columns lists {duplicates} more than once; list each feature once")
    reserved = [name for name in feature_columns if name in (*KEY_COLUMNS, LABEL_COLUMN)]
    if reserved:
        raise TrainingDataError(
            f"feature_columns contains the key or label columns {reserved}; they cannot be model features"
        )


def _check_model_features(booster: xgb.Booster, feature_columns: Sequence[str]) -> None:
    """Raise FeatureMismatchError unless the model's feature names equal ``feature_columns``."""
    model_features = list(booster.feature_names or [])
    passed = list(feature_columns)
    if model_features == passed:
        return
    if not model_features:
        raise FeatureMismatchError(
            "the model has no feature names, so its inputs cannot be checked; "
            "train it with models.training, which records them"
        )
    only_model = [name for name in model_features if name not in passed]
    only_passed = [name for name in passed if name not in model_features]
    if only_model or only_passed:
        detail = f"missing from the passed columns: {only_model}; not in the model: {only_passed}"
    else:
        detail = f"same columns in another order; the model expects {model_features}"
    raise FeatureMismatchError(
        f"feature columns differ from the model's ({detail}). "
        "Pass the model's feature columns, or train a full model to change the feature set."
    )


def _feature_matrix(
    rows: pd.DataFrame, feature_columns: Sequence[str], *, purpose: str, order: np.ndarray | None = None
) -> np.ndarray:
    """Return the features as float32, with NaN for unknown values, rows taken in ``order`` if given.

    The matrix is filled column by column, so no copy of the selected columns is made on the
    way: for a full train over many days that copy was as large as the matrix itself.
    """
    _check_feature_list(feature_columns)
    _require_columns(rows, feature_columns, purpose=purpose)
    not_numeric = [
        f"{name} ({rows[name].dtype})" for name in feature_columns if not pd.api.types.is_numeric_dtype(rows[name].dtype)
    ]
    if not_numeric:
        raise TrainingDataError(
            f"feature columns for {purpose} must be numeric, but these are not: {not_numeric}. "
            "Encode them as numbers, with NaN for unknown values."
        )
    count = len(rows) if order is None else len(order)
    matrix = np.empty((count, len(feature_columns)), dtype=np.float32)
    for position, name in enumerate(feature_columns):
        values = rows[name].to_numpy(dtype=np.float32, na_value=np.nan)
        matrix[:, position] = values if order is None else values[order]
    infinite_counts = np.isinf(matrix).sum(axis=0)
    infinite = {name: int(count) for name, count in zip(feature_columns, infinite_counts) if count}
    if infinite:
        raise TrainingDataError(
            f"feature columns for {purpose} hold infinite values (column: rows) {infinite}; "
            "use NaN for unknown values and finite numbers otherwise"
        )
    return matrix


def _labels(rows: pd.DataFrame) -> np.ndarray:
    _require_columns(rows, [LABEL_COLUMN], purpose="training")
    labels = rows[LABEL_COLUMN]
    invalid = ~labels.isin([0, 1])
    if invalid.any():
        examples = labels[invalid].head(5).tolist()
        raise TrainingDataError(
            f"{int(invalid.sum())} training rows have a label other than 0 or 1 (e.g. {examples}); "
            "labels must be 1 for a purchase and 0 otherwise"
        )
    values = labels.to_numpy(dtype=np.float32)
    if len(values) == 0:
        raise TrainingDataError("there are no training rows; check the training window and the holdout share")
    if values.min() == values.max():
        raise TrainingDataError(
            f"all {len(values)} training rows have label {int(values[0])}; a purchase model needs both "
            "purchases (1) and non-purchases (0). Add negative sampling or widen the training window."
        )
    return values


def sorted_training_arrays(rows: pd.DataFrame, feature_columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(features, labels, order)`` of the rows sorted by their keys.

    ``features`` is float32 in model order, ``labels`` float32, and ``order`` the row
    positions in key order, so that ``rows.iloc[order]`` lines up with both.
    """
    _require_columns(rows, KEY_COLUMNS, purpose="training")
    keys = rows[list(KEY_COLUMNS)].reset_index(drop=True)
    order = keys.sort_values(list(KEY_COLUMNS), kind="mergesort").index.to_numpy()
    labels = _labels(rows)[order]
    matrix = _feature_matrix(rows, feature_columns, purpose="training", order=order)
    return matrix, labels, order


def training_matrix(
    rows: pd.DataFrame, feature_columns: Sequence[str], *, quantized: bool = False
) -> xgb.DMatrix | xgb.QuantileDMatrix:
    """Build the training matrix of the rows in the order of their keys.

    Sorting makes the model independent of the order the rows arrived in. Without it,
    the same 10,000 rows in shuffled order gave different trees with xgboost 3.2 (hist),
    because quantile sketches and floating-point gradient sums depend on row order. Only
    the key columns are sorted; the features are converted to float32 once and then put
    in that order, so no sorted copy of the whole frame is made.

    Args:
        rows: Training rows.
        feature_columns: Feature columns, in model order.
        quantized: Build a ``QuantileDMatrix``, which holds only the histogram bin of each
            value instead of a copy of the values as well. A full train uses it. Continued
            boosting does not, because the champion's trees are evaluated on these rows and
            need the exact values, not the bins of this window's quantiles.
    """
    matrix, labels, _ = sorted_training_arrays(rows, feature_columns)
    if quantized:
        return xgb.QuantileDMatrix(matrix, label=labels, feature_names=list(feature_columns), missing=np.nan)
    return xgb.DMatrix(matrix, label=labels, feature_names=list(feature_columns), missing=np.nan)


def _train_metrics(booster: xgb.Booster, dtrain: xgb.DMatrix | xgb.QuantileDMatrix) -> str:
    """Return XGBoost's evaluation line (auc, logloss) of the training rows, for the log."""
    return booster.eval(dtrain, name="train").split("\t", 1)[-1]
