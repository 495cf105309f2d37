#!/usr/bin/env bash
# The slowest test files of a run: `TEST_TAP=run.tap npm test`, then `scripts/test-timings.sh run.tap [N]`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node dist/test/helpers/test-timings.js "$@"
