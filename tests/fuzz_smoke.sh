#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each one briefly: its seeds (fuzz/seeds/<target>),
# then a few seconds of fuzzing from them. Fails on any crash, panic or timeout, and names the
# input that caused it (fuzz/artifacts/<target>/). docs/reliability.md says what each target
# drives and how to fuzz for longer.
#
#   bash tests/fuzz_smoke.sh              # every target, 5 s each
#   FUZZ_SECONDS=60 bash tests/fuzz_smoke.sh control config
#
# Works with the stable toolchain alone: with `--sanitizer none` cargo-fuzz passes rustc only
# flags that stable accepts (no -Z flags, so no RUSTC_BOOTSTRAP and no sanitizer runtime).
# Builds with `--dev` (no optimization): a few seconds of fuzzing need no speed, and the build
# is most of the smoke's time. Installs cargo-fuzz from crates.io when it is missing. The new
# inputs a run finds go to a temporary directory, so fuzz/seeds/ stays as committed. One
# fuzzing job at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${FUZZ_SECONDS:-5}
TARGETS=(sdp_offer sdpfrag datagram rtp_payload control config)
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
fi
FUZZ=(cargo fuzz)
FLAGS=(--sanitizer none --dev)

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

step "cargo fuzz build"
"${FUZZ[@]}" build "${FLAGS[@]}"

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
failed=()
for target in "${TARGETS[@]}"; do
  step "cargo fuzz run $target (seeds, then ${SECONDS_EACH} s)"
  mkdir -p "$corpus/$target"
  dict=()
  if [ -f "fuzz/dicts/$target.dict" ]; then
    dict=("-dict=fuzz/dicts/$target.dict")
  fi
  # The first corpus directory takes what the run finds; the seeds are only read.
  log="$corpus/$target.log"
  if "${FUZZ[@]}" run "${FLAGS[@]}" "$target" "$corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1; then
    grep -E '^(#[0-9]+.*DONE|Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || tail -n 5 "$log"
  else
    cat "$log"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\nFAILED fuzz targets: %s (the inputs are in fuzz/artifacts/)\n' "${failed[*]}" >&2
  exit 1
fi
printf '\n==> every fuzz target ran clean\n'
