#!/usr/bin/env bash
# Fails when proto/ (as in the working tree) breaks a caller of the contract as it was in the
# previous commit. The first commit that adds proto/ has nothing to compare with.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUF=.local/venv/bin/buf
base=${CUSTOPS_PROTO_BASE:-HEAD~1}

if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "proto-check: no commit $base to compare with; skipping buf breaking" >&2
  exit 0
fi
if ! git cat-file -e "$base:proto" 2>/dev/null; then
  echo "proto-check: $base has no proto/; skipping buf breaking" >&2
  exit 0
fi
echo "proto-check: buf breaking against $base" >&2
"$BUF" breaking --against ".git#ref=$(git rev-parse "$base")"
