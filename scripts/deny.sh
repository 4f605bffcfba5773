#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy: deny.toml): licences, bans
# (duplicate versions warn) and sources (crates.io only) always; RustSec
# advisories when a copy of the advisory database is on this machine.
#
# The database is a git repository on GitHub, which CI here cannot reach.
# Where the network is there, fetch it once (and again to refresh):
#   cargo deny fetch db        # into $CARGO_HOME/advisory-dbs
# and this script checks advisories too, offline, from that copy.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deny --locked check --hide-inclusion-graph licenses bans sources
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
# A fetched database is a directory per source (advisory-db-<hash>/crates/…);
# cargo-deny leaves a db.lock behind even when it has none.
if compgen -G "$db/advisory-db-*/crates" >/dev/null; then
  cargo deny --locked --offline check --hide-inclusion-graph advisories
else
  echo "deny: advisories not checked: no RustSec database in $db (run 'cargo deny fetch db' where GitHub is reachable)" >&2
fi
