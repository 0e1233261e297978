"""The Dagster resource that gives assets the freshrank home and its settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from freshrank.config import Settings, load_settings


class FreshrankHome(ConfigurableResource):
    """A freshrank home folder; every asset reads and writes under it."""

    home: str

    def settings(self) -> Settings:
        return load_settings(self.home)
