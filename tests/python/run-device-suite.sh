#!/usr/bin/env bash
# python-fido2's own device test suite (tests/device/ of the fido2 sdist: Yubico's tests
# for real authenticators), run unmodified against a simulated YubiKey of every firmware
# profile over the UDP HID bridge (SPEC §10). tests/python/sim_device_plugin.py points
# the suite's device discovery at `prereg-station sim serve` and turns its remove/insert
# prompts into unplug/plug (a power cycle); touches are automatic (--touch auto).
#
# The sdist is the version of fido2 installed in .venv (tests/python/requirements.txt
# pins the range), downloaded once into target/fido2-sdist/ (never committed).
#
# Usage: tests/python/run-device-suite.sh [PROFILE...] [-- PYTEST_ARGS...]
#        (PREREG_STATION_BIN=path: test that binary instead of a fresh debug build)
# Exit status: 0 only if every profile has 0 failures and 0 errors.
# Results: target/device-suite/PROFILE.xml (JUnit) and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

profiles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    *) profiles+=("$1"); shift ;;
  esac
done
[ ${#profiles[@]} -gt 0 ] || profiles=(yubikey-5.2 yubikey-5.4 yubikey-5.7 security-key-5.7)

py=.venv/bin/python
[ -x "$py" ] || { echo "run-device-suite: $py missing: run scripts/setup.sh --with-python" >&2; exit 2; }

version="$("$py" -c 'import importlib.metadata as m; print(m.version("fido2"))')"
cache=target/fido2-sdist
suite="$cache/fido2-$version/tests/device"
if [ ! -f "$suite/conftest.py" ]; then
  mkdir -p "$cache"
  "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "fido2==$version" -d "$cache"
  tar -xzf "$cache/fido2-$version.tar.gz" -C "$cache"
fi
[ -f "$suite/conftest.py" ] || { echo "run-device-suite: no tests/device in the fido2 $version sdist" >&2; exit 2; }

# PREREG_STATION_BIN: test that binary instead of building target/debug/prereg-station.
if [ -n "${PREREG_STATION_BIN:-}" ]; then
  bin="$(realpath "$PREREG_STATION_BIN")"
else
  cargo build --locked -q --bin prereg-station
  bin="$PWD/target/debug/prereg-station"
fi

out=target/device-suite
mkdir -p "$out"
status=0
for profile in "${profiles[@]}"; do
  echo "=== python-fido2 $version device suite: $profile ==="
  # -p no:cacheprovider: nothing written into the unpacked sdist.
  if ! PYTHONPATH="$PWD/tests/python" "$py" -m pytest -p sim_device_plugin -p no:cacheprovider \
      --sim-profile "$profile" --sim-bin "$bin" -q -rfEs \
      --junitxml "$out/$profile.xml" -o junit_family=xunit2 "$suite" "$@"; then
    status=1
  fi
done

"$py" - "$out" "${profiles[@]}" <<'EOF'
import sys
import xml.etree.ElementTree as ET
out, profiles = sys.argv[1], sys.argv[2:]
print(f"{'profile':<18} {'tests':>5} {'passed':>6} {'failed':>6} {'errors':>6} {'skipped':>7}")
for p in profiles:
    try:
        s = ET.parse(f"{out}/{p}.xml").getroot()
    except (OSError, ET.ParseError):
        print(f"{p:<18} (no results)")
        continue
    s = s if s.tag == "testsuite" else s.find("testsuite")
    t, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
    print(f"{p:<18} {t:>5} {t - f - e - k:>6} {f:>6} {e:>6} {k:>7}")
EOF
exit "$status"
