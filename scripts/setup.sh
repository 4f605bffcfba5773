#!/usr/bin/env bash
# Installs what building and testing prereg-station needs on a clean Debian
# machine that has only the Rust toolchain: C libraries for the -sys crates and
# the independent test peers (python-fido2, jwcrypto) in a private venv, and
# libfido2-dev for the libfido2 peer check (tests/libfido2/).
# Idempotent: every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

# softhsm2 + opensc: a software PKCS#11 token and pkcs11-tool for the HSM
# key-custody tests (SPEC §14, tests/it/hsm.rs); the station itself loads
# whatever module [keys] pkcs11_module names.
# p11-kit + p11-kit-modules: `p11-kit server` and p11-kit-client.so put the
# test token in another process, as a network HSM is (tests/it/hsm_process.rs);
# libffi-dev + libtasn1-6-dev + curl + xz-utils: scripts/p11-kit-build.sh builds
# p11-kit 0.25 for that test (bookworm's 0.24 cannot forward ECDH).
# libssl-dev: OpenSSL headers for the josekit dev-dependency (tests only; the
# station binary does not link OpenSSL).
need_apt=()
# postgresql + openssl: the throw-away fleet database of scripts/pg-throwaway.sh (SPEC §13).
for pkg in pkg-config libudev-dev libpcsclite-dev libclang-dev libssl-dev pcscd vsmartcard-vpcd libfido2-dev softhsm2 opensc p11-kit p11-kit-modules libffi-dev libtasn1-6-dev curl xz-utils postgresql openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# cargo-deny for scripts/deny.sh (licences, bans, sources, advisories). No
# prebuilt binary can be fetched here, so it is built from crates.io: measured
# 20 min 26 s wall (700 MB peak RSS) on a 2-core machine shared with other
# builds; once per machine, then it stays in ~/.cargo/bin.
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "setup: installing cargo-deny 0.20 (built from source, takes minutes)" >&2
  cargo install --locked cargo-deny --version '^0.20'
fi

with_python=0; with_browser=0
for arg in "$@"; do
  case "$arg" in
    --with-python) with_python=1 ;;
    # Headless chromium for the status-page browser test and
    # scripts/screenshot.sh; opt-in locally (~400 MB installed); scripts/test.sh (CI) asks for it.
    --with-browser) with_browser=1 ;;
    *) echo "setup: unknown option $arg (use --with-python, --with-browser)" >&2; exit 2 ;;
  esac
done

if [ "$with_python" = 1 ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
fi

if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing chromium" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
