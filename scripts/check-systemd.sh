#!/usr/bin/env bash
# Checks the shipped systemd unit: `systemd-analyze verify` (with ExecStart pointed at the
# freshly built binary, since nothing is installed in /usr/bin here) and the hardening
# threshold of issue "Ship it": `systemd-analyze security` exposure at most 2.0.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/prereg-station.service
bin="${1:-$PWD/target/debug/prereg-station}"
if ! command -v systemd-analyze >/dev/null; then
  echo "check-systemd: systemd-analyze not found; skipping (install systemd)" >&2
  exit 0
fi
[ -x "$bin" ] || { echo "check-systemd: $bin is not built" >&2; exit 1; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/bin/prereg-station|ExecStart=$bin|" "$unit" > "$tmp/prereg-station.service"
systemd-analyze verify "$tmp/prereg-station.service"

# --threshold is on the 0-100 scale: 20 = exposure 2.0.
out=$(systemd-analyze security --offline=yes --threshold=20 "$unit" 2>&1) || {
  echo "$out" | tail -5 >&2
  echo "check-systemd: exposure above 2.0" >&2
  exit 1
}
echo "$out" | tail -1
