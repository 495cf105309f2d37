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

if [ -n "${TEST_FILES:-}" ]; then read -ra files <<<"$TEST_FILES"; else mapfile -t files < <(find dist/test -name '*.test.js' | sort); fi
# A file that needs the machine to itself (it freezes a filesystem, mounts a loop device, or times
# what it measures against a bound the load of other files would break) says so in a line
# `// scripts/test.sh: alone`; those run one after another, the rest TEST_CONCURRENCY at a time.
serial=()
concurrent=()
for f in "${files[@]}"; do
  if grep -q '^// scripts/test.sh: alone' "$f" 2>/dev/null; then serial+=("$f"); else concurrent+=("$f"); fi
done
# The largest files (on the whole the longest) start first, so the pass does not end with one long
# file running by itself on cores the others have left.
if [ ${#concurrent[@]} -gt 0 ]; then mapfile -t concurrent < <(ls -S -- "${concurrent[@]}"); fi

# The servers the files share (test/helpers/run-services.ts): one Temporal dev server, each file in
# a namespace of its own, and an initdb'd PostgreSQL data directory each file's cluster is copied
# from. Without them (they did not start) every file starts its own, as when it runs alone.
services=$(mktemp -d)
services_pid=
stop_services() {
  if [ -n "$services_pid" ]; then { kill -TERM "$services_pid" && wait "$services_pid"; } 2>/dev/null || true; fi
  rm -rf "$services"
}
trap 'stop_services; reap' EXIT
node dist/test/helpers/run-services.js >"$services/env" 2>"$services/stderr" &
services_pid=$!
# Bounded: servers that hang while starting leave each file to start its own, not the run waiting.
services_deadline=$((SECONDS + 120))
while [ "$(grep -c = "$services/env")" -lt 2 ] && kill -0 "$services_pid" 2>/dev/null && [ "$SECONDS" -lt "$services_deadline" ]; do sleep 0.2; done
if [ "$(grep -c = "$services/env")" -ge 2 ]; then
  while IFS='=' read -r name value; do export "$name=$value"; done <"$services/env"
else
  echo "the shared test servers did not start ($(tail -n 1 "$services/stderr")): each test file starts its own" >&2
fi

taps=()
status=0
export FAULT_MATRIX_FILE="${FAULT_MATRIX_FILE:-$PWD/dist/fault-matrix.jsonl}"
rm -f "$FAULT_MATRIX_FILE"
# A file that hangs is killed at 5 minutes of the machine to itself (so 5 minutes per file running
# at once: on a busy machine each runs that much slower); the whole run (both passes), at an hour
# (a normal run takes ~15 min), so a hang ends as a failure here rather than as a CI timeout.
# --foreground keeps Ctrl-C working; the files' processes the runner leaves behind are stopped by `reap`.
bound=${TEST_TIME_BOUND:-60m}
case $bound in
  *h) limit=$((${bound%h} * 3600)) ;;
  *m) limit=$((${bound%m} * 60)) ;;
  *s) limit=${bound%s} ;;
  *) limit=$bound ;;
esac
deadline=$((SECONDS + limit))
run_pass() {
  local concurrency=$1 left tap
  shift
  [ $# -gt 0 ] || return 0
  left=$((deadline - SECONDS))
  if [ "$left" -le 0 ]; then
    status=124
    return 0
  fi
  tap=$(mktemp)
  taps+=("$tap")
  timeout --foreground --kill-after=30s "${left}s" node --test --test-concurrency="$concurrency" --test-timeout=$((300000 * concurrency)) \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    "$@" || status=$?
}
# Most of a file's time is waiting on servers and subprocesses, not computing: on 2 cores, four
# files at a time finish soonest (scripts/test-timings.sh measures a run).
run_pass "${TEST_CONCURRENCY:-4}" ${concurrent[@]+"${concurrent[@]}"}
run_pass 1 ${serial[@]+"${serial[@]}"}
# The runner's summary; without one (the time bound stopped the runner), the results it wrote until
# then, suites left out as the summary leaves them out. Nothing here may fail: the counts, the
# matrix and the runner's exit code are what the bound exists to keep.
passed=0 failed=0 skipped=0
for tap in ${taps[@]+"${taps[@]}"}; do
  read -r p f s < <(awk '
    function flush() { if (st != "") n[st]++; st = "" }
    /^# (pass|fail|skipped) [0-9]+$/ { sum[$2] = $3; summary = 1 }
    /^ *(not )?ok [0-9]+ / { flush(); st = /^ *not ok/ ? "fail" : / # SKIP/ ? "skipped" : "pass"; next }
    /^ *type: .suite.$/ { st = "" }
    END { flush(); if (summary) print sum["pass"]+0, sum["fail"]+0, sum["skipped"]+0; else print n["pass"]+0, n["fail"]+0, n["skipped"]+0 }
  ' "$tap") || true
  passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0})) skipped=$((skipped + ${s:-0}))
done
# TEST_TAP: keep the run's TAP there (both passes), e.g. for scripts/test-timings.sh.
if [ -n "${TEST_TAP:-}" ]; then cat ${taps[@]+"${taps[@]}"} /dev/null >"$TEST_TAP" || true; fi
rm -f ${taps[@]+"${taps[@]}"}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "the run was stopped at its time bound (${TEST_TIME_BOUND:-60m}, exit $status) before the runner's summary: the counts are of the results written until then" >&2
fi
node dist/test/helpers/print-fault-matrix.js || true
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
