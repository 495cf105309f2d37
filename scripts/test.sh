#!/usr/bin/env bash
# `npm test`: set up what is missing (OS packages, temporal binary, node_modules, build), then
# run every test on real parts: PostgreSQL, a Temporal dev server, pigz, docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
tap=$(mktemp)
status=0
export FAULT_MATRIX_FILE="$PWD/dist/fault-matrix.jsonl"
rm -f "$FAULT_MATRIX_FILE"
node --test --test-concurrency=1 --test-timeout=300000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  "${files[@]}" || status=$?
passed=$(grep -E '^# pass ' "$tap" | awk '{print $3}')
failed=$(grep -E '^# fail ' "$tap" | awk '{print $3}')
skipped=$(grep -E '^# skipped ' "$tap" | awk '{print $3}')
rm -f "$tap"
node dist/test/helpers/print-fault-matrix.js
echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit $status
