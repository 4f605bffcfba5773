#!/usr/bin/env bash
# Screenshots of the operator status page in headless chromium.
#
#   scripts/screenshot.sh [OUT_DIR]
#
# Runs the browser integration tests (tests/it/rig.rs, `rig::browser`) with
# SCREENSHOT_DIR set:
#  - the real `prereg-station demo --web 127.0.0.1:0 --web-hold 20` with the
#    YubiKey latency model, while headless chromium watches slot 0 go
#    idle → programming → PASS and the demo exit 0; it saves
#      OUT_DIR/demo-programming.png   1600×900, a key being programmed
#      OUT_DIR/demo-done.png          1600×900, the final board
#  - a StatusBoard stepped by the test (a busy 6-slot board, controls, token):
#      OUT_DIR/status-page.png         1600×900 (a line monitor)
#      OUT_DIR/status-page-narrow.png   800×1000 (a tablet on the bench)
#      OUT_DIR/status-page-16.png      1600×900, a 16-slot batch rig
# OUT_DIR defaults to target/screenshots. Takes about a minute.
#
# Chromium is driven over the DevTools protocol on a pipe
# (--remote-debugging-pipe) with these flags, each for a reason:
#   --headless --disable-gpu           no display, no GPU on a CI box
#   --no-sandbox                       running as root in a container
#   --disable-quic --disable-background-networking --disable-component-update
#   --disable-sync --no-first-run      no traffic to anything but the page
#   --user-data-dir=<fresh temp dir>   no profile state between runs
# A one-shot `chromium --screenshot`/`--dump-dom` is not used: it fires at the
# load event, before the first SSE event has drawn the tiles, and
# `--virtual-time-budget` never expires while the SSE stream is open.
#
# Needs chromium: `scripts/setup.sh --with-browser` (opt-in, ~350 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/screenshots}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  echo "screenshot: chromium not found; run scripts/setup.sh --with-browser" >&2
  exit 2
fi
SCREENSHOT_DIR="$out" PREREG_REQUIRE_PEERS=1 cargo test --locked --test it rig::browser -- --nocapture
ls -l "$out"/demo-*.png "$out"/status-page*.png
