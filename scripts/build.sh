#!/usr/bin/env bash
# Type-checks and compiles everything into dist/, then writes the production workflow bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
npx tsc -p tsconfig.json
chmod +x dist/cli/cli.js
node dist/workers/bundle.js
