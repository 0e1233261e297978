"""Conversion of stage records into Dagster materialization metadata."""

from __future__ import annotations

import math

import numpy as np
from dagster import MetadataValue


def clean_metadata(values: dict) -> dict:
    """Turn a flat record into typed metadata: numbers stay numbers, None and NaN are dropped."""
    metadata = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, (dict, list, tuple)):
            metadata[key] = MetadataValue.json(value)
        elif isinstance(value, (bool, int, float, str)):
            metadata[key] = value
        else:
            metadata[key] = str(value)
    return metadata
