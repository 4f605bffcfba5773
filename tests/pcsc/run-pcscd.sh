#!/usr/bin/env bash
# Runs a private pcscd with only vsmartcard's vpcd reader driver, for the PC/SC
# integration tests (tests/it/pcsc.rs). No systemd needed: pcscd runs in the
# foreground (-f), in the background of this script, with its own reader
# config directory (-c), so no real reader driver is loaded.
#
#   run-pcscd.sh start DIR     start pcscd (state, config and log under DIR)
#   run-pcscd.sh stop DIR      stop the pcscd started with DIR
#   run-pcscd.sh -- CMD...     start, run CMD with PREREG_PCSC=1 and
#                              PREREG_PCSC_DIR=DIR exported, stop; exit with CMD's status
#
# vpcd listens on 127.0.0.1:$PREREG_VPCD_PORT (default 35963) for slot 0 and
# the next port for slot 1 (readers "Virtual PCD 00 00" and "Virtual PCD 00 01").
# pcscd's socket is the system one (/run/pcscd), so this needs write access to
# /run/pcscd (root in CI) and refuses to start if another pcscd is running.
set -euo pipefail

port="${PREREG_VPCD_PORT:-35963}"
driver=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
sock=/run/pcscd/pcscd.comm

die() { echo "run-pcscd: $*" >&2; exit 1; }

start() {
  local dir="$1"
  command -v pcscd >/dev/null || die "pcscd not installed (apt-get install pcscd vsmartcard-vpcd)"
  [ -f "$driver" ] || die "vpcd driver $driver missing (apt-get install vsmartcard-vpcd)"
  if [ -f "$dir/pcscd.pid" ] && kill -0 "$(cat "$dir/pcscd.pid")" 2>/dev/null; then
    return 0 # already ours and running
  fi
  if [ -f /run/pcscd/pcscd.pid ] && kill -0 "$(cat /run/pcscd/pcscd.pid)" 2>/dev/null; then
    die "another pcscd (pid $(cat /run/pcscd/pcscd.pid)) is running; stop it first"
  fi
  mkdir -p "$dir/conf"
  # Same content as Debian's /etc/reader.conf.d/vpcd, with our port.
  printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      %s\nCHANNELID    0x%X\n' \
    "$port" "$driver" "$port" >"$dir/conf/vpcd"
  rm -f "$sock"
  pcscd --foreground --config "$dir/conf" ${PREREG_PCSCD_LOG_LEVEL:---info} >"$dir/pcscd.log" 2>&1 &
  echo $! >"$dir/pcscd.pid"
  for _ in $(seq 100); do
    [ -S "$sock" ] && return 0
    kill -0 "$(cat "$dir/pcscd.pid")" 2>/dev/null || { cat "$dir/pcscd.log" >&2; die "pcscd exited"; }
    sleep 0.05
  done
  die "pcscd did not open $sock within 5 s"
}

stop() {
  local dir="$1" pid
  [ -f "$dir/pcscd.pid" ] || return 0
  pid="$(cat "$dir/pcscd.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/pcscd.pid"
}

case "${1:-}" in
  start) start "${2:?DIR}" ;;
  stop) stop "${2:?DIR}" ;;
  --)
    shift
    [ $# -gt 0 ] || die "usage: run-pcscd.sh -- CMD..."
    dir="$(mktemp -d -t prereg-pcscd.XXXXXX)"
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    start "$dir"
    status=0
    PREREG_PCSC=1 PREREG_PCSC_DIR="$dir" "$@" || status=$?
    exit "$status"
    ;;
  *) die "usage: run-pcscd.sh start DIR | stop DIR | -- CMD..." ;;
esac
