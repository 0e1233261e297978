#!/usr/bin/env bash
# Install freshrank and replay the shipped synthetic shop through the Dagster daily loop.
# Extra arguments go to `freshrank demo` (for example --days 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
. .venv/bin/activate
exec freshrank demo "$@"
