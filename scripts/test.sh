#!/usr/bin/env bash
# `npm test`: set up what is missing (OS packages, temporal binary, node_modules, build), then
# run every test on real parts: PostgreSQL, a Temporal dev server, pigz, docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."
# TEST_SETUP=skip, TEST_FILES (space-separated) and TEST_TIME_BOUND: for the test of this script itself.
if [ "${TEST_SETUP:-}" != skip ]; then
  bash scripts/setup.sh test
  # The linter first: a workflow file that imports a Node built-in, a floating promise or a
  # subprocess outside the runner fails the run before 25 minutes of tests.
  npx eslint .
fi
export PATH="$PWD/.venv/bin:$PATH"

# Every process the tests start inherits this marker. Whatever still carries it when the run ends
# (servers orphaned by a test file the runner killed on its timeout) is stopped here, so nothing
# outlives the run holding its output open. Bash's own /proc environ predates the export, and the
# reaper's commands run without it: only the tests' processes match.
export IMMICH_BACKUP_TEST_RUN="$$.$(date +%s%N)"
reap() {
  (
    marker="IMMICH_BACKUP_TEST_RUN=$IMMICH_BACKUP_TEST_RUN"
    unset IMMICH_BACKUP_TEST_RUN
    left() {
      local f pid
      for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        grep -qzxF "$marker" "$f" 2>/dev/null && echo "$pid"
      done
    }
    mapfile -t pids < <(left)
    [ ${#pids[@]} -eq 0 ] && exit 0
    echo "stopping ${#pids[@]} processes the tests left running: $(ps -o comm= -p "$(IFS=,; echo "${pids[*]}")" | sort | uniq -c | xargs)" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 20); do
      mapfile -t pids < <(left)
      [ ${#pids[@]} -eq 0 ] && exit 0
      sleep 0.5
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  )
}
trap reap EXIT

if [ -n "${TEST_FILES:-}" ]; then read -ra files <<<"$TEST_FILES"; else mapfile -t files < <(find dist/test -name '*.test.js' | sort); fi
tap=$(mktemp)
status=0
export FAULT_MATRIX_FILE="${FAULT_MATRIX_FILE:-$PWD/dist/fault-matrix.jsonl}"
rm -f "$FAULT_MATRIX_FILE"
# A file that hangs is killed at 5 minutes; the whole run, at an hour (a normal run takes ~10 min),
# so a hang ends as a failure here rather than as a CI timeout. --foreground keeps Ctrl-C working;
# the files' processes the runner leaves behind are stopped by `reap`.
timeout --foreground --kill-after=30s "${TEST_TIME_BOUND:-60m}" node --test --test-concurrency=1 --test-timeout=300000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  "${files[@]}" || status=$?
# The runner's summary; without one (the time bound stopped the runner), the results it wrote until
# then, suites left out as the summary leaves them out. Nothing here may fail: the counts, the
# matrix and the runner's exit code are what the bound exists to keep.
read -r passed failed skipped < <(awk '
  function flush() { if (st != "") n[st]++; st = "" }
  /^# (pass|fail|skipped) [0-9]+$/ { sum[$2] = $3; summary = 1 }
  /^ *(not )?ok [0-9]+ / { flush(); st = /^ *not ok/ ? "fail" : / # SKIP/ ? "skipped" : "pass"; next }
  /^ *type: .suite.$/ { st = "" }
  END { flush(); if (summary) print sum["pass"]+0, sum["fail"]+0, sum["skipped"]+0; else print n["pass"]+0, n["fail"]+0, n["skipped"]+0 }
' "$tap") || true
rm -f "$tap"
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "the run was stopped at its time bound (${TEST_TIME_BOUND:-60m}, exit $status) before the runner's summary: the counts are of the results written until then" >&2
fi
node dist/test/helpers/print-fault-matrix.js || true
echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit $status
