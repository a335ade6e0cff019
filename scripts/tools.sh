#!/usr/bin/env bash
# Installs the project's non-Rust tools into .local/venv (git-ignored) from scripts/requirements.txt:
# buf for the contract checks. Idempotent: reinstalls only when the requirements change.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.local/venv"
REQS="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"

want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if ! python3 -m venv "$VENV" 2>/dev/null; then
  # Debian splits venv support into its own package.
  echo "tools: installing python3-venv" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
echo "$want" > "$STAMP"
