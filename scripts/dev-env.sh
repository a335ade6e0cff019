#!/usr/bin/env bash
# Makes sure a Postgres and a Redis are reachable, then runs a command with DATABASE_URL and
# REDIS_URL set for it. `make run`, `make test` and CI all go through here.
#
#   scripts/dev-env.sh run -- <command> [args...]
#
# For each server, in order:
#   1. DATABASE_URL / REDIS_URL already set: used as given.
#   2. A server answers on 127.0.0.1:5432 / 127.0.0.1:6379 (ports overridable with
#      CUSTOPS_PROBE_PG_PORT / CUSTOPS_PROBE_REDIS_PORT): used, never touched.
#   3. Otherwise a throw-away server is started on a free port under .local/ (installing the
#      Debian/Ubuntu package first when the binary is missing) and stopped again when the
#      command exits. A throw-away server that another invocation started is reused and left
#      to that invocation to stop.
#
# The database custops uses is `custops` (created when missing); tests create their own
# databases beside it through the same server. Tests also start Redis servers and a Redis
# Cluster of their own, so `redis-server` and `redis-cli` are installed when either is missing,
# and a PgBouncer of their own, so `pgbouncer` is installed when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL="$ROOT/.local"
PG_PROBE_PORT=${CUSTOPS_PROBE_PG_PORT:-5432}
REDIS_PROBE_PORT=${CUSTOPS_PROBE_REDIS_PORT:-6379}
STARTED=()

log() { printf 'dev-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local port
  for port in $(seq "$1" $(($1 + 200))); do
    port_open "$port" || { echo "$port"; return; }
  done
  die "no free port found from $1"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* automatically: no apt-get (install it by hand)"
  log "installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] && command -v initdb >/dev/null; then dir=$(dirname "$(command -v initdb)"); fi
  echo "$dir"
}

# Runs a Postgres server binary as the unprivileged `postgres` user when we are root (initdb
# and postgres refuse to run as root).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    log "Postgres: using DATABASE_URL from the environment"
    return
  fi
  if port_open "$PG_PROBE_PORT"; then
    log "Postgres: using the server on 127.0.0.1:$PG_PROBE_PORT"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PROBE_PORT/custops"
    create_custops_database "127.0.0.1" "$PG_PROBE_PORT"
    return
  fi

  local dir="$LOCAL/postgres" bin port home
  if [ -f "$dir/port" ] && port_open "$(cat "$dir/port")"; then
    port=$(cat "$dir/port")
    log "Postgres: reusing the throw-away server on 127.0.0.1:$port"
  else
    bin=$(pg_bin_dir)
    if [ -z "$bin" ]; then apt_install postgresql; bin=$(pg_bin_dir); fi
    [ -n "$bin" ] || die "Postgres binaries not found after installing"
    port=$(free_port 55432)
    rm -rf "$dir"; mkdir -p "$dir"
    home="$dir"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres "$dir"
      # The server runs as `postgres`, which must reach its directory: a checkout inside a
      # directory only root may enter (`mktemp -d` makes them 0700) gets one under /tmp.
      if ! runuser -u postgres -- test -w "$dir"; then
        home=$(mktemp -d /tmp/custops-postgres.XXXXXX)
        chown postgres "$home"
      fi
    fi
    echo "$home" > "$dir/home"
    log "Postgres: starting a throw-away server on 127.0.0.1:$port ($home)"
    pg_as_owner "$bin/initdb" -D "$home/data" -U postgres --auth=trust -E UTF8 >/dev/null
    pg_as_owner "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w \
      -o "-p $port -k $home -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
    echo "$port" > "$dir/port"
    echo "$bin" > "$dir/bin"
    STARTED+=(postgres)
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/custops"
  create_custops_database "127.0.0.1" "$port"
}

create_custops_database() {
  local psql
  psql=$(command -v psql || true)
  [ -n "$psql" ] || psql="$(pg_bin_dir)/psql"
  [ -x "$psql" ] || { log "psql not found; assuming database custops exists"; return; }
  if ! "$psql" -h "$1" -p "$2" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'custops'" | grep -q 1; then
    "$psql" -h "$1" -p "$2" -U postgres -d postgres -qc "CREATE DATABASE custops" >/dev/null 2>&1 \
      || log "could not create database custops (another run may have just created it)"
  fi
}

ensure_redis() {
  if [ -n "${REDIS_URL:-}" ]; then
    log "Redis: using REDIS_URL from the environment"
    return
  fi
  if port_open "$REDIS_PROBE_PORT"; then
    log "Redis: using the server on 127.0.0.1:$REDIS_PROBE_PORT"
    export REDIS_URL="redis://127.0.0.1:$REDIS_PROBE_PORT"
    return
  fi

  local dir="$LOCAL/redis" port
  if [ -f "$dir/port" ] && port_open "$(cat "$dir/port")"; then
    port=$(cat "$dir/port")
    log "Redis: reusing the throw-away server on 127.0.0.1:$port"
  else
    command -v redis-server >/dev/null || apt_install redis-server
    port=$(free_port 56379)
    rm -rf "$dir"; mkdir -p "$dir"
    log "Redis: starting a throw-away server on 127.0.0.1:$port ($dir)"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/server.log"
    for _ in $(seq 50); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "Redis did not start (see $dir/server.log)"
    echo "$port" > "$dir/port"
    STARTED+=(redis)
  fi
  export REDIS_URL="redis://127.0.0.1:$port"
}

# The tests' private Redis servers and clusters (custops-testkit `redis`, `redis_cluster`) run
# these from PATH; Debian's redis-server package brings redis-tools (redis-cli) with it.
ensure_redis_programs() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server redis-tools
  fi
}

# The tests through a pooler run a PgBouncer of their own (custops-testkit `pgbouncer`) from
# PATH; Debian's package installs it (and starts nothing: the tests start their own).
ensure_pooler_program() {
  command -v pgbouncer >/dev/null || apt_install pgbouncer
}

stop_started() {
  local server
  for server in "${STARTED[@]}"; do
    case "$server" in
      postgres)
        log "Postgres: stopping the throw-away server"
        local home
        home=$(cat "$LOCAL/postgres/home")
        pg_as_owner "$(cat "$LOCAL/postgres/bin")/pg_ctl" -D "$home/data" -m fast stop >/dev/null || true
        rm -f "$LOCAL/postgres/port"
        # A home outside the checkout (see ensure_postgres) is not kept for a later reuse.
        if [ "$home" != "$LOCAL/postgres" ]; then rm -rf "$home"; fi ;;
      redis)
        log "Redis: stopping the throw-away server"
        kill "$(cat "$LOCAL/redis/redis.pid")" 2>/dev/null || true
        rm -f "$LOCAL/redis/port" ;;
    esac
  done
}

main() {
  [ "${1:-}" = run ] && [ "${2:-}" = -- ] && [ $# -ge 3 ] \
    || die "usage: scripts/dev-env.sh run -- <command> [args...]"
  shift 2
  mkdir -p "$LOCAL"
  trap stop_started EXIT
  ensure_postgres
  ensure_redis
  ensure_redis_programs
  ensure_pooler_program
  # Run the command as a child (not exec) so the trap can stop what we started.
  "$@"
}

main "$@"
