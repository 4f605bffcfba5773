#!/usr/bin/env bash
# Screenshots of the operator status page in headless chromium.
#
#   scripts/screenshot.sh [OUT_DIR]
#
# Runs the browser integration test (tests/it/rig.rs, `rig::browser`): it
# serves a StatusBoard, updates it as the station does (slot 0 goes idle →
# programming → PASS while one page stays open), checks the page's DOM after
# each SSE update, and with SCREENSHOT_DIR set saves
#   OUT_DIR/status-page.png         1600×900 (a line monitor)
#   OUT_DIR/status-page-narrow.png   800×1000 (a tablet on the bench)
#   OUT_DIR/status-page-16.png      1600×900, a 16-slot batch rig
# OUT_DIR defaults to target/screenshots.
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
SCREENSHOT_DIR="$out" cargo test --test it rig::browser -- --nocapture
ls -l "$out"/status-page*.png
