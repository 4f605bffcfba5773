#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, and
# the interop tests against independent peers (python-fido2, jwcrypto,
# fido-authenticator behind the UDP bridge, pcscd with vpcd).
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-browser: chromium for the status-page tests in tests/it/rig.rs
# (`rig::browser`); measured on Debian 12: 124 MB download / 395 MB installed
# on top of a Rust+Python image, ~12 s to install.
scripts/setup.sh --with-python --with-browser

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
scripts/deny.sh

# Independent CTAP 2.1 peer (fido-authenticator behind the UDP HID bridge): its own
# workspace; the interop tests below and tests/it/trussed.rs drive it.
cargo fmt --manifest-path tools/trussed-udp/Cargo.toml -- --check
PREREG_TRUSSED_UDP="$(tools/trussed-udp/build.sh)"
export PREREG_TRUSSED_UDP
cargo test --locked --manifest-path tools/trussed-udp/Cargo.toml --release

# Hardware-in-the-loop cross-check (ctap-hid-fido2; speaks real HID only, so it runs on a
# bench, docs/operations.md): built and linted here so it does not rot (~50 s cold, release).
# tests/it/hil.rs itself runs below against simulated keys it serves over UDP.
cargo fmt --manifest-path tools/hil-crosscheck/Cargo.toml -- --check
cargo build --locked --release --manifest-path tools/hil-crosscheck/Cargo.toml
cargo clippy --locked --release --manifest-path tools/hil-crosscheck/Cargo.toml -- -D warnings
unset PREREG_HIL_KEYS

# p11-kit 0.25 for the out-of-process token of tests/it/hsm_process.rs (bookworm's
# 0.24 cannot forward ECDH; the test then requires the whole flow, not a partial one).
PREREG_TEST_P11_KIT_PREFIX="$(scripts/p11-kit-build.sh)"
export PREREG_TEST_P11_KIT_PREFIX

# Interop and browser tests must not skip here: the venv and chromium above
# provide the peers.
PREREG_REQUIRE_PEERS=1 cargo test --locked
# Once more with Debian's p11-kit 0.24, which cannot forward ECDH: `run` must refuse to
# start through it with one line (exit 2), not requeue every job for ever.
env -u PREREG_TEST_P11_KIT_PREFIX PREREG_REQUIRE_PEERS=1 \
  cargo test --locked --test it hsm_process::the_station_holds_no_private_key
.venv/bin/python -m pytest -q tests/python

# python-fido2's own device test suite (Yubico's tests for real authenticators, from the
# fido2 sdist, run unmodified) and libfido2 (tests/libfido2/client.c, custom report I/O over the
# same bridge) against a simulated key of every profile over the UDP bridge (issue #15):
# 0 failures, and every skip explained by the key's own getInfo.
tests/python/run-device-suite.sh
tests/libfido2/run.sh

# Keys over PC/SC through a real pcscd with the vpcd virtual reader
# (tests/it/pcsc.rs; skipped above because PREREG_PCSC is unset there).
tests/pcsc/run-pcscd.sh -- cargo test --locked --test it pcsc::

# Every fuzz target for a few seconds (docs/fuzzing.md); skipped, saying so, without nightly
# and cargo-fuzz.
FUZZ_SECS=10 scripts/fuzz-smoke.sh

# The fleet store (SPEC §13) on a real, throw-away PostgreSQL: the store's
# tests on both backends and the multi-process fleet tests (tests/it/fleet.rs).
# No silent skip: if the server cannot start, this fails.
scripts/pg-throwaway.sh -- cargo test --locked -- store:: fleet::
# The whole station suite once more, every station on PostgreSQL.
scripts/pg-throwaway.sh -- env PREREG_TEST_STORE=postgres cargo test --locked --test it station::

# Shipped system integration: the unit verifies and meets the hardening threshold.
scripts/check-systemd.sh
