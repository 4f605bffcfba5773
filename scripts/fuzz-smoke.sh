#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short, bounded time (docs/fuzzing.md).
#   scripts/fuzz-smoke.sh            # FUZZ_SECS (default 20) seconds per target
#   FUZZ_SECS=600 scripts/fuzz-smoke.sh rig_codec   # a longer campaign on one target
# Needs a nightly toolchain and cargo-fuzz; without them it says so and exits 0
# unless PREREG_REQUIRE_FUZZ=1 (then 1), so machines without nightly still pass CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECS:-20}"
if ! rustup run nightly rustc --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: skipped (needs a nightly toolchain and cargo-fuzz; see docs/fuzzing.md)" >&2
  [ "${PREREG_REQUIRE_FUZZ:-0}" = 1 ] && exit 1
  exit 0
fi
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
fail=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  # -max_len covers one full CTAPHID message (7609 bytes) and any rig line or APDU.
  if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 \
      -print_final_stats=1 >"$log" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "fuzz-smoke: $t: ${secs}s, $runs runs, no crash"
  else
    echo "fuzz-smoke: $t: FAILED (artifacts in fuzz/artifacts/$t/)" >&2
    tail -40 "$log" >&2
    fail=1
  fi
  rm -f "$log"
done
exit "$fail"
