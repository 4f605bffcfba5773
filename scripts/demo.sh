#!/usr/bin/env bash
# The embedded default: `prereg-station demo` over the simulator, after setup.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --release -- demo "$@"
