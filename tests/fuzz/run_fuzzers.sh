#!/usr/bin/env bash
# Why this file exists: CI and people run every fuzz target the same way — for a bounded time each, from
# a scratch copy of its seed corpus (the seeds in the repository stay as they are), stopping at the first
# finding and saying which target found what. A finding leaves crash-*/leak-*/timeout-* files in the
# output folder; reproduce one with `build/fuzz/tests/fuzz/fuzz_<what> <that file>`.
#
#   tests/fuzz/run_fuzzers.sh [seconds per target, default 30] [build dir, default build/fuzz] [output dir]
set -euo pipefail

seconds=${1:-30}
build=$(cd "${2:-build/fuzz}" && pwd)
out=${3:-$(mktemp -d "${TMPDIR:-/tmp}/bora-fuzz-run-XXXXXX")}
here=$(cd "$(dirname "$0")" && pwd)

shopt -s nullglob
programs=("$build"/tests/fuzz/fuzz_*)
if [ ${#programs[@]} -eq 0 ]; then
  echo "run_fuzzers.sh: no fuzz programs in $build/tests/fuzz (cmake --preset fuzz && cmake --build --preset fuzz)" >&2
  exit 2
fi

status=0
for program in "${programs[@]}"; do
  what=${program##*/fuzz_}
  work="$out/$what"
  mkdir -p "$work/corpus"
  [ -d "$here/corpus/$what" ] && cp "$here/corpus/$what"/* "$work/corpus/"
  echo "== fuzz_$what: ${seconds}s"
  if (cd "$work" && "$program" -max_total_time="$seconds" -timeout=25 -print_final_stats=1 corpus > log.txt 2>&1); then
    grep -E '^(Done|stat::number_of_executed_units)' "$work/log.txt" || true
  else
    status=1
    echo "fuzz_$what FOUND SOMETHING (log: $work/log.txt):"
    grep -E -A30 'ERROR|fuzz property broken|Test unit written' "$work/log.txt" | head -60
  fi
done
exit $status
