#!/usr/bin/env bash
# Set up (if needed), then start the lab in the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamlit run app.py "$@"
