#!/usr/bin/env bash
# Installs what `custops bench` runs besides the suite: pgbench, the baseline of loyalty.earn
# (Debian/Ubuntu package postgresql-client). `make bench` calls it; it does nothing when pgbench
# is already on PATH.
set -euo pipefail

log() { printf 'bench-tools: %s\n' "$*" >&2; }

command -v pgbench >/dev/null && exit 0
command -v apt-get >/dev/null || { log "pgbench missing and no apt-get: install PostgreSQL's client tools by hand"; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else log "need root (or sudo) to run: $*"; exit 1
  fi
}
log "installing postgresql-client (pgbench)"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null
command -v pgbench >/dev/null || { log "pgbench still missing after installing postgresql-client"; exit 1; }
