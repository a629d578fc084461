# shellcheck shell=bash
# A throwaway PostgreSQL server on loopback for the PostgreSQL tests.
#
# Sourced by .ci/run: installs the Debian package, starts a cluster in a temporary folder as the
# `postgres` user (the server refuses to run as root) on 127.0.0.1 and a free port, and exports
# APITWIN_TEST_POSTGRES_URL. The server is stopped and its folder removed when the shell exits.
# Run on its own (`bash .ci/postgres.sh`) it starts a server, prints the URL and waits for Ctrl+C.

APITWIN_PG_CTL=()

_apitwin_pg_main() {
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  local bin
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n 1)")
  local runner=()
  if [ "$(id -u)" = 0 ]; then
    runner=(runuser -u postgres --)
  fi

  APITWIN_PG_DIR=$(mktemp -d /tmp/apitwin-pg.XXXXXX)
  chmod 755 "$APITWIN_PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$APITWIN_PG_DIR"; fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

  "${runner[@]}" "$bin/initdb" -D "$APITWIN_PG_DIR/data" -U apitwin --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$APITWIN_PG_DIR/initdb.log" 2>&1 \
    || { cat "$APITWIN_PG_DIR/initdb.log" >&2; return 1; }
  # Small and quick: a test server, not a production one (nothing here must survive a crash).
  "${runner[@]}" "$bin/pg_ctl" -D "$APITWIN_PG_DIR/data" -l "$APITWIN_PG_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $APITWIN_PG_DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null \
    || { cat "$APITWIN_PG_DIR/server.log" >&2; return 1; }
  APITWIN_PG_CTL=("${runner[@]}" "$bin/pg_ctl" -D "$APITWIN_PG_DIR/data" -m immediate stop)
  export APITWIN_TEST_POSTGRES_URL="postgresql://apitwin@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') at $APITWIN_TEST_POSTGRES_URL"
}

_apitwin_pg_stop() {
  if [ -n "${APITWIN_PG_DIR:-}" ]; then
    "${APITWIN_PG_CTL[@]}" >/dev/null 2>&1 || true
    rm -rf "$APITWIN_PG_DIR"
    APITWIN_PG_DIR=
  fi
}

if _apitwin_pg_main; then
  trap _apitwin_pg_stop EXIT
else
  _apitwin_pg_stop
  echo "warning: no PostgreSQL server could be started; the PostgreSQL tests will fail in CI" >&2
fi

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ -n "${APITWIN_PG_DIR:-}" ]; then
  echo "Ctrl+C stops it."
  trap 'kill $! 2>/dev/null; exit 0' INT TERM
  while true; do sleep 3600 & wait $!; done
fi
