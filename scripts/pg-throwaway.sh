#!/usr/bin/env bash
# A throw-away PostgreSQL server for the fleet tests (SPEC §13): initdb in a
# temporary directory as an unprivileged user, TCP on a free loopback port,
# TLS with a CA and a server certificate for "localhost" made here, stopped
# and removed at exit.
#
#   pg-throwaway.sh -- CMD...   start, run CMD with these exported, stop; exit with CMD's status:
#     PREREG_TEST_PG_URL   postgresql://postgres@127.0.0.1:PORT/postgres?sslmode=disable
#     PREREG_TEST_PG_TLS_URL  the same over TLS: host=localhost, sslmode=verify-full, sslrootcert=CA
#     PREREG_REQUIRE_PG=1  the PostgreSQL tests fail (never skip) without a server
#
# If the server cannot start, this fails: CI never skips the PostgreSQL tests.
# Needs the Debian `postgresql` package (scripts/setup.sh installs it) and, as
# root, a user to run the server as (postgres, made by the package).
set -euo pipefail

die() { echo "pg-throwaway: $*" >&2; exit 1; }

[ "${1:-}" = "--" ] || die "usage: pg-throwaway.sh -- CMD..."
shift
[ $# -gt 0 ] || die "usage: pg-throwaway.sh -- CMD..."

bindir="${PREREG_PG_BINDIR:-}"
if [ -z "$bindir" ]; then
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bindir="$d"; done
fi
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "initdb not found: apt-get install postgresql (scripts/setup.sh does)"

dir="$(mktemp -d /tmp/prereg-pg.XXXXXX)"
as_user=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (apt-get install postgresql)"
  chown postgres: "$dir"
  as_user=(runuser -u postgres --)
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

cleanup() {
  "${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

# TLS: a CA and a server certificate for localhost (verify-full checks the name).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=prereg throw-away CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost\n' >"$dir/ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/ext" -out "$dir/data/server.crt" >/dev/null 2>&1
[ "${#as_user[@]}" -gt 0 ] && chown postgres: "$dir/data/server.key" "$dir/data/server.crt"
chmod 600 "$dir/data/server.key"
chmod 644 "$dir/ca.pem"

# Throw-away: no fsync (speed; PREREG_PG_FSYNC=on for benchmarks that compare
# durable commits); a socket directory of its own.
sync="${PREREG_PG_FSYNC:-off}"
case "$sync" in on|off) ;; *) die "PREREG_PG_FSYNC is on or off" ;; esac
"${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$sync -c synchronous_commit=$sync -c full_page_writes=$sync -c max_connections=300 -c ssl=on" \
  start >/dev/null || { cat "$dir/server.log" >&2; die "the server did not start"; }

export PREREG_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable"
export PREREG_TEST_PG_TLS_URL="postgresql://postgres@localhost:$port/postgres?sslmode=verify-full&sslrootcert=$dir/ca.pem"
export PREREG_REQUIRE_PG=1
echo "pg-throwaway: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
