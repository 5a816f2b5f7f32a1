#!/usr/bin/env bash
# Runs the whole test suite RUNS times in a row while HOGS busy loops compete for the CPU, to show that no
# test hangs under load (pytest-timeout bounds each test; this shows none needs it).
# Usage: scripts/suite_under_load.sh [RUNS=5] [HOGS=1]   — prints one line per run and a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
HOGS=${2:-1}
LOGDIR=${LOGDIR:-var/suite-under-load}
mkdir -p "$LOGDIR"
pids=()
for _ in $(seq "$HOGS"); do (while :; do :; done) & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
echo "$(nproc) cores, $HOGS busy loop(s); logs in $LOGDIR"
failed=0
for i in $(seq "$RUNS"); do
  start=$(date +%s)
  CI=true timeout 3600 .venv/bin/python -m pytest -q -p no:cacheprovider > "$LOGDIR/run$i.log" 2>&1
  rc=$?
  summary=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed).* in " "$LOGDIR/run$i.log" | tail -1)
  timeouts=$(grep -c "Timeout" "$LOGDIR/run$i.log")
  echo "run $i: rc=$rc $(( $(date +%s) - start )) s, pytest-timeout hits: $timeouts, $summary"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
done
echo "$RUNS runs, $failed failed"
exit $(( failed > 0 ))
