#!/usr/bin/env bash
# libfido2 (Debian's libfido2-dev, installed by scripts/setup.sh) against a simulated
# YubiKey of every firmware profile over the UDP HID bridge (SPEC §10): builds
# tests/libfido2/client.c with cc + pkg-config, starts one blank key per profile with
# `prereg-station sim serve --touch auto`, and runs the client's steps (info, set PIN,
# makeCredential rk, getAssertion, credential management, authenticatorConfig).
#
# Usage: tests/libfido2/run.sh [--build-only] [PROFILE...]
#        (PREREG_STATION_BIN=path: test that binary instead of a fresh debug build)
# Exit status: 0 only if every step passed on every profile.
set -euo pipefail
cd "$(dirname "$0")/../.."

build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(yubikey-5.2 yubikey-5.4 yubikey-5.7 security-key-5.7)

pkg-config --exists libfido2 || { echo "libfido2: pkg-config finds no libfido2: run scripts/setup.sh" >&2; exit 2; }
mkdir -p target/libfido2
client=target/libfido2/client
# shellcheck disable=SC2046 # pkg-config output is meant to split into flags
cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O1 $(pkg-config --cflags libfido2) \
  -o "$client" tests/libfido2/client.c $(pkg-config --libs libfido2)
echo "libfido2 $(pkg-config --modversion libfido2): client built" >&2
[ "$build_only" = 0 ] || exit 0

# PREREG_STATION_BIN: test that binary instead of building target/debug/prereg-station.
if [ -n "${PREREG_STATION_BIN:-}" ]; then
  bin="$PREREG_STATION_BIN"
else
  cargo build --locked -q --bin prereg-station
  bin=target/debug/prereg-station
fi

sim_pid=""
stop_sim() {
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  sim_pid=""
}
trap stop_sim EXIT

status=0
summary=()
for profile in "${profiles[@]}"; do
  echo "=== libfido2 client: $profile ==="
  # stdin stays open (sim serve reads rig commands from it) through a coprocess pipe.
  coproc SIM { exec "$bin" sim serve --profile "$profile" --udp 127.0.0.1:0 --touch auto --seed 15; }
  sim_pid=$SIM_PID
  line=""
  read -r -t 30 line <&"${SIM[0]}" || true
  addr="${line##* udp }"
  if [ -z "$line" ] || [ "$addr" = "$line" ]; then
    echo "sim serve did not start: '$line'" >&2
    status=1; summary+=("$profile: sim serve did not start"); stop_sim; continue
  fi
  if "$client" "$addr"; then
    summary+=("$profile: all steps passed")
  else
    status=1
    summary+=("$profile: FAILED")
  fi
  stop_sim
done

printf '%s\n' "${summary[@]}"
exit "$status"
