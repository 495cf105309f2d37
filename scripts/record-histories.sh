#!/usr/bin/env bash
# Re-records test/replay/histories/*.json from real runs of every workflow (see
# test/replay/record-histories.ts). Only after a change guarded by patched(): add the new histories,
# keep the old ones (docs/workflow-versioning.md). Needs root (a tmpfs for the drive), like the tests.
# Workflow IDs as arguments (replay-restore-database-rollback ...) write only those histories.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
export PATH="$PWD/.venv/bin:$PATH"
node dist/test/replay/record-histories.js "$@"
