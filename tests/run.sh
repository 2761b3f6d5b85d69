#!/usr/bin/env bash
# Set up a virtual environment (if needed), lint (ruff) and run the default test suite.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup_env.sh
python -m ruff check --quiet .
python -m pytest -n "${PYTEST_WORKERS:-2}" -q "$@"
