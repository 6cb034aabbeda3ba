#!/usr/bin/env bash
# Set up (if needed), then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=1 scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Both cores: two workers, each test file on one of them (a file's trained fixtures are trained
# once), the longest files first (tests/conftest.py orders them), each worker and what it starts on
# one thread. -n 0 runs in one process.
.venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
