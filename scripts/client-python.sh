#!/usr/bin/env bash
# The Python client in clients/python: its build-and-test venv, its wheel, its tests.
#
#   scripts/client-python.sh wheel        # target/python/custops-<version>-py3-none-any.whl
#   scripts/client-python.sh test [ARGS]  # install the package as a user would, run pytest
#
# The venv is .local/venv-client (git-ignored), made from clients/python/requirements-dev.txt
# and remade only when that file changes, as scripts/tools.sh does for .local/venv. The tests
# start their own `custops dev` from the binary `cargo build --bin custops` made, against
# DATABASE_URL / REDIS_URL: run them through scripts/dev-env.sh (`make test-python`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENT="$ROOT/clients/python"
VENV="$ROOT/.local/venv-client"
REQS="$CLIENT/requirements-dev.txt"
STAMP="$VENV/.requirements.sha256"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
WHEELS="$TARGET/python"

ensure_venv() {
  local want
  want=$(sha256sum "$REQS" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    return
  fi
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    echo "client-python: installing python3-venv" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  # --only-binary: every pin has wheels; never compile grpcio from source.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: -r "$REQS"
  echo "$want" > "$STAMP"
}

# Builds the wheel into $WHEELS (the venv already holds the build requirements, so no
# isolated build environment is downloaded) and prints its path.
build_wheel() {
  ensure_venv
  mkdir -p "$WHEELS"
  rm -f "$WHEELS"/custops-*.whl
  "$VENV/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$WHEELS" "$CLIENT" >&2
  ls "$WHEELS"/custops-*.whl
}

case "${1:-}" in
  wheel)
    wheel=$(build_wheel)
    echo "client-python: built $wheel"
    ;;
  test)
    shift
    wheel=$(build_wheel)
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"
    cd "$CLIENT"
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: scripts/client-python.sh wheel | test [pytest args]" >&2
    exit 2
    ;;
esac
