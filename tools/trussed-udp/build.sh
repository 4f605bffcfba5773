#!/usr/bin/env bash
# Builds the trussed-udp test peer (release, its own workspace, lockfile and target dir)
# and prints the binary's absolute path on stdout; cargo's output goes to stderr.
# Needs libclang-dev (bindgen for littlefs2-sys); scripts/setup.sh installs it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --release --locked \
  --manifest-path "$here/Cargo.toml" \
  --target-dir "$here/target" >&2
echo "$here/target/release/trussed-udp"
