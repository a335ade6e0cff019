#!/usr/bin/env bash
# `make k8s-check`: everything about k8s/ that can be known without a cluster.
#
#   1. renders every overlay in k8s/overlays with `kubectl kustomize` into .local/k8s-rendered/;
#   2. validates every object against the Kubernetes $K8S_VERSION schemas, strictly (an unknown
#      field is an error), with kubernetes-validate;
#   3. scans the rendered objects with checkov: zero failed checks; the skips and their reasons
#      are in k8s/.checkov.yaml and in checkov.io/skipN annotations;
#   4. lints the Dockerfile (hadolint, and checkov's Dockerfile policies): no Docker engine runs
#      on our machines, so this is all the checking it gets before a real build;
#   5. checks the manifests against the code (scripts/k8s_manifest_check.py: environment variables
#      against config.rs, Service ports against the ports the binaries serve, native gRPC probes
#      on the port they serve health on (CUSTOPS_HEALTH_PORT under TLS), limits,
#      securityContext, grace period, slow HPA scale-in, a direct URL beside a pooled one, the
#      pgbouncer component's pgbouncer.ini), then proves that check refuses broken copies;
#   6. renders k8s/observability (the Grafana dashboard ConfigMap and the PrometheusRule),
#      validates the ConfigMap with kubernetes-validate and scans both with checkov (with the
#      overlays), and checks the dashboard and rules against the metrics the code exports
#      (scripts/observability_check.py, which also validates the PrometheusRule: a CRD that
#      kubernetes-validate has no schema for), then proves that check refuses broken copies.
#
# Tools come from scripts/tools.sh (pinned in scripts/requirements.txt); kubectl from the
# machine (Kustomize v5 or later is needed: kubectl 1.27+).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_BIN="$ROOT/.local/venv/bin"
OUT="$ROOT/.local/k8s-rendered"
# The oldest Kubernetes minor we support: native gRPC probes are GA from 1.27, the preStop
# `sleep` action is on by default from 1.30. Validating against the oldest catches fields that
# only newer clusters know.
K8S_VERSION=1.30.0

die() { printf 'k8s-check: error: %s\n' "$*" >&2; exit 1; }

"$ROOT/scripts/tools.sh"
command -v kubectl >/dev/null || die "kubectl is not installed (it renders the overlays: kubectl kustomize)"

rm -rf "$OUT"
mkdir -p "$OUT"
rendered=()
for dir in "$ROOT"/k8s/overlays/*/; do
  name=$(basename "$dir")
  [ -f "$dir/kustomization.yaml" ] || continue
  kubectl kustomize "$dir" > "$OUT/$name.yaml" || die "kubectl kustomize k8s/overlays/$name failed"
  rendered+=("$OUT/$name.yaml")
done
[ ${#rendered[@]} -gt 0 ] || die "no overlay found under k8s/overlays"
echo "k8s-check: rendered ${#rendered[@]} overlay(s): $(cd "$OUT" && echo *.yaml)"
# The dashboard and alert rules: not an overlay (applied where Grafana and Prometheus look), so
# kept out of the overlay checks of the manifest checker.
OBS="$OUT/observability/observability.yaml"
mkdir -p "$OUT/observability"
kubectl kustomize "$ROOT/k8s/observability" > "$OBS" || die "kubectl kustomize k8s/observability failed"

"$VENV_BIN/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict --quiet "${rendered[@]}" \
  || die "schema validation against Kubernetes $K8S_VERSION failed (above)"
echo "k8s-check: every object is valid against the Kubernetes $K8S_VERSION schemas (strict)"
# kubernetes-validate knows no CRD and only warns on one (--no-warn); observability_check.py
# refuses any kind there but ConfigMap and PrometheusRule and validates the PrometheusRule itself.
"$VENV_BIN/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict --quiet --no-warn "$OBS" \
  || die "schema validation of k8s/observability against Kubernetes $K8S_VERSION failed (above)"
echo "k8s-check: k8s/observability's ConfigMap is valid (strict); its PrometheusRule is checked below"

# checkov, offline (skip-download). Files are named one by one: given a directory, checkov
# silently skips any path with a dot-folder in it, such as .local/, and would pass having
# scanned nothing, so the summary must also show checks that passed.
run_checkov() {
  local what=$1 dir="$OUT/checkov-$1" status=0
  shift
  "$VENV_BIN/checkov" "$@" --output cli --output json --output-file-path "$dir" > /dev/null || status=$?
  "$VENV_BIN/python" - "$dir/results_json.json" "$status" "$what" <<'PY' \
    || { cat "$dir/results_cli.txt" >&2; die "checkov ($what): see above"; }
import json, sys
results = json.load(open(sys.argv[1]))
summary = (results if isinstance(results, dict) else results[0])["summary"]
if summary["failed"] or summary["parsing_errors"] or not summary["passed"] or sys.argv[2] != "0":
    sys.exit(f"k8s-check: checkov ({sys.argv[3]}): {summary}")
print(f"k8s-check: checkov ({sys.argv[3]}): {summary['resource_count']} objects, "
      f"{summary['passed']} checks passed, none failed, {summary['skipped']} skipped with reasons")
PY
}

# The manifests, with k8s/.checkov.yaml (global skips; per-resource ones are checkov.io/skipN
# annotations).
checkov_files=()
for f in "${rendered[@]}" "$OBS"; do checkov_files+=(--file "$f"); done
run_checkov manifests --config-file "$ROOT/k8s/.checkov.yaml" "${checkov_files[@]}"

# The Dockerfile, which no machine of ours can build: hadolint and checkov's Dockerfile policies
# are all the checking it gets before a real build (its one skip is inline).
"$VENV_BIN/hadolint" "$ROOT/Dockerfile" || die "hadolint found problems in the Dockerfile (above)"
echo "k8s-check: hadolint: Dockerfile clean"
run_checkov Dockerfile --framework dockerfile --file "$ROOT/Dockerfile" --compact --skip-download

"$VENV_BIN/python" "$ROOT/scripts/k8s_manifest_check.py" "${rendered[@]}"
"$VENV_BIN/python" "$ROOT/scripts/k8s_manifest_check.py" --self-test "${rendered[@]}"

# The dashboard and alert rules against the metrics catalogue (k8s/observability/metrics.json).
"$VENV_BIN/python" "$ROOT/scripts/observability_check.py" "$OBS"
"$VENV_BIN/python" "$ROOT/scripts/observability_check.py" --self-test "$OBS"
