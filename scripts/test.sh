#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, and
# the interop tests against independent peers (python-fido2, jwcrypto).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-python

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Interop tests must not skip here: the venv above has the peers.
PREREG_REQUIRE_PEERS=1 cargo test --locked
.venv/bin/python -m pytest -q tests/python

# Keys over PC/SC through a real pcscd with the vpcd virtual reader
# (tests/it/pcsc.rs; skipped above because PREREG_PCSC is unset there).
tests/pcsc/run-pcscd.sh -- cargo test --locked --test it pcsc::

# Shipped system integration: the unit verifies and meets the hardening threshold.
scripts/check-systemd.sh
