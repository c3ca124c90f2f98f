#!/usr/bin/env bash
# The runs behind BENCHMARKS.md, on a 2-CPU machine: the server under test (a tablecast node with
# one media worker, or Janus) pinned to CPU 1, the load tool to CPU 0.
#
#   bash scripts/benchmarks.sh [OUT_DIR]        # REPEAT=3 by default; QUICK=1 for a fast pass
#
# Needs Debian's janus package (apt-get install -y janus). Every run writes OUT_DIR/NAME.json
# and OUT_DIR/NAME.txt; OUT_DIR/machine.txt records the machine and its load before the runs.
# Results are only meaningful on a quiet machine: each row's "other" column is the CPU the rest
# of the machine used during that window.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench-results/$(date +%Y%m%d-%H%M%S)}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-20s}
RAMP_DURATION=${RAMP_DURATION:-10s}
if [ "${QUICK:-0}" = 1 ]; then REPEAT=1; DURATION=5s; RAMP_DURATION=4s; fi
mkdir -p "$OUT"

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release
BIN=target/release/tablecast
command -v janus >/dev/null || { echo "janus is not installed: apt-get install -y janus" >&2; exit 1; }

{
  echo "# $(date -u +%FT%TZ)"
  uname -a
  echo "nproc: $(nproc)"
  lscpu
  uptime
  git log -1 --format='commit %H %s'
} > "$OUT/machine.txt"

run() {
  local name=$1; shift
  echo "==> $name: $*"
  taskset -c 0 "$BIN" bench --node-cpus 1 --node-workers 1 --json "$OUT/$name.json" "$@" \
    | tee "$OUT/$name.txt"
}

for i in $(seq 1 "$REPEAT"); do
  for n in 100 500 1000; do
    run "fixed-$n-$i" --target both --subscribers "$n" --duration "$DURATION"
  done
done
for i in $(seq 1 "$REPEAT"); do
  run "ramp-$i" --target both --ramp --subscribers 100 --ramp-step 100 \
    --duration "$RAMP_DURATION" --bet-duration 0s
done
echo "results in $OUT"
