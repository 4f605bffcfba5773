#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, and
# the interop tests against independent peers (python-fido2, jwcrypto).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-python

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

# Independent CTAP 2.1 peer (fido-authenticator behind the UDP HID bridge): its own
# workspace; the interop tests below and tests/it/trussed.rs drive it.
cargo fmt --manifest-path tools/trussed-udp/Cargo.toml -- --check
PREREG_TRUSSED_UDP="$(tools/trussed-udp/build.sh)"
export PREREG_TRUSSED_UDP
cargo test --locked --manifest-path tools/trussed-udp/Cargo.toml --release

cargo test --locked
.venv/bin/python -m pytest -q tests/python
