#!/usr/bin/env bash
# `npm run bench` (never part of `npm test`): every figure with a target, side by side in one run.
#   bench/run.ts            database, restore, drill (with content digests), library mirror (ARGS go here)
#   bench/library-mirror.ts the versioned mirror against plain rsync: no-change rerun, a 1% change
#   bench/library-audit.ts  LibraryAudit against sha1sum at the same priority; the worker's RSS at 13.5k and 135k assets
#   bench/encryption.ts     what encrypting the NAS copy (age) adds to a backup's wall time at 1 GiB; the worker's peak RSS
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
node dist/bench/run.js "$@"
node dist/bench/library-mirror.js --files 135000 --runs 3
node dist/bench/library-audit.js --files 2000 --mib 1 --small 13500 --large 135000 --runs 3
node dist/bench/encryption.js --gib 1 --runs 3
