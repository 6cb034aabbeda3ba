#!/usr/bin/env bash
# Set up (if needed), then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=1 scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
