#!/usr/bin/env bash
# Set up (if needed), then start the lab in the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The FMNIST_* settings checked before the server starts: a wrong one is one line, not a lab that
# silently ignores it.
.venv/bin/python -m fmnist_core settings >/dev/null
exec .venv/bin/streamlit run app.py "$@"
