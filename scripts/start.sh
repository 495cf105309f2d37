#!/usr/bin/env bash
# `npm start`: set up what is missing, then run the worker; with no temporal.address configured
# it first starts the embedded Temporal dev server (Web UI on http://127.0.0.1:8233).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh runtime
export PATH="$PWD/.venv/bin:$PATH"
exec dist/cli/cli.js start "$@"
