#!/usr/bin/env bash
# Install freshrank with its test extras and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
. .venv/bin/activate
exec python -m pytest "$@"
