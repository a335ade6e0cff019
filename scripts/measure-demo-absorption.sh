#!/usr/bin/env bash
# How long segmentation takes to absorb the demo that `custops dev` (make run) loads into an
# empty database, against how long profiles takes to load it (issue 16's `make run` goal:
# within 2x). Creates the database custops_demo_absorption (dropped first), starts the suite
# on it, polls profiles' outbox and segmentation's cursor every 2 s, and stops the suite once
# profiles has stopped growing and segmentation has caught up.
# Usage: scripts/measure-demo-absorption.sh [custops binary, default target/debug/custops]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/custops}
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=custops_demo_absorption
psql "$admin" -qc "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
url="${admin%/*}/$database"
q() { psql "$url" -tAc "$1" 2>/dev/null || echo 0; }
start=$(date +%s.%N)
DATABASE_URL=$url CUSTOPS_LISTEN_HOST=127.0.0.1 "$binary" dev > target/demo-absorption.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
last=-1; stable=0; last_change=$start
for _ in $(seq 1 900); do
  sleep 2
  now=$(date +%s.%N)
  rows=$(q "SELECT count(*) FROM profiles.outbox")
  sequence=$(q "SELECT COALESCE(max(sequence), 0) FROM profiles.outbox")
  cursor=$(q "SELECT COALESCE(max(last_sequence), 0) FROM segmentation.feed_cursors WHERE feed = 'profiles'")
  printf '%6.1f s  profiles events %s (sequenced %s)  segmentation cursor %s\n' \
    "$(echo "$now - $start" | bc)" "$rows" "$sequence" "$cursor"
  if [ "$rows" != "$last" ]; then stable=0; last_change=$now; else stable=$((stable + 1)); fi
  last=$rows
  if [ "$rows" != 0 ] && [ "$stable" -ge 3 ] && [ "$cursor" = "$sequence" ]; then
    loaded=$(echo "$last_change - $start" | bc)
    absorbed=$(echo "$now - $start" | bc)
    echo "profiles loaded $rows events by ${loaded} s; segmentation had applied them all by ${absorbed} s (ratio $(echo "scale=2; $absorbed / $loaded" | bc); polled every 2 s, both counted from the suite's start)"
    exit 0
  fi
done
echo "segmentation did not catch up within 30 minutes" >&2
exit 1
