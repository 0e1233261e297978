"""docs/configuration.md shows the defaults of freshrank/config.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from freshrank.config import Settings, load_settings
from freshrank.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
EXAMPLE_ONLY = {"timezone", "start_day"}
"""Keys the page sets to example values rather than their defaults."""


def _documented() -> dict:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, f"{DOC} has no yaml block"
    return yaml.safe_load(block.group(1))


def test_documented_values_are_the_defaults(tmp_path):
    defaults = Settings(home=tmp_path).model_dump(mode="json")
    documented = _documented()
    mismatches = []
    for section, values in documented.items():
        if section in EXAMPLE_ONLY:
            continue
        if not isinstance(values, dict):
            if defaults[section] != values:
                mismatches.append(f"{section}: page {values!r}, default {defaults[section]!r}")
            continue
        for key, value in values.items():
            if defaults[section][key] != value:
                mismatches.append(f"{section}.{key}: page {value!r}, default {defaults[section][key]!r}")
    assert mismatches == []


def test_documented_example_loads(tmp_path):
    settings = Settings(home=tmp_path, **_documented())
    assert settings.orchestration.concurrent_branches is True


def test_zero_bucket_rows_rejected(tmp_path):
    (tmp_path / "freshrank.yaml").write_text("online_store:\n  full_write_bucket_rows: 0\n")
    with pytest.raises(ConfigError, match="full_write_bucket_rows") as raised:
        load_settings(tmp_path)
    assert "freshrank.yaml" in str(raised.value)
