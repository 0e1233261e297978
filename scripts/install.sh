#!/usr/bin/env bash
# Create .venv (if missing) and install freshrank with the pinned package set of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -c constraints.txt -e ".[test,redis,dask,browser]"
