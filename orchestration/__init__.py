"""Dagster definitions of the freshrank daily loop."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Partitioned asset checks and nonexistent-upstream partition mappings are preview and beta
# APIs of Dagster 1.13; freshrank pins the minor version, so their warnings are noise here.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
