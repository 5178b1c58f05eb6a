#!/usr/bin/env bash
# Fetches the CRDs of the other projects the chart can create objects for, at pinned versions,
# from the Go module proxy (checked against the Go checksum database like any module), into a
# cache outside the checkout:
#
#   monitoring.coreos.com (ServiceMonitor, PrometheusRule)  github.com/prometheus-operator/prometheus-operator
#     example/prometheus-operator-crd/, the CRDs the project publishes for its operator
#   cert-manager.io (Certificate, Issuer, ClusterIssuer)   github.com/cert-manager/cert-manager
#     deploy/crds/
#
# tests/chart.rs applies them before the chart's render, so the render's ServiceMonitor,
# PrometheusRule, Certificate and Issuer are checked by the real API server against the real
# schemas rather than a hand-written copy.
#
# Prints the directory holding the CRD files on stdout; progress goes to stderr. Needs Go only
# the first time. Runs at once share the cache through a lock, like build.sh.
set -euo pipefail

PROMETHEUS_OPERATOR_VERSION="${ASO_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CERT_MANAGER_VERSION="${ASO_CERT_MANAGER_VERSION:-v1.21.2}"
CACHE_ROOT="${ASO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/amazon-seller-operator}"
OUT_DIR="$CACHE_ROOT/third-party-crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION+cert-manager-$CERT_MANAGER_VERSION"

if [[ -f "$OUT_DIR/.complete" ]]; then
  echo "$OUT_DIR"
  exit 0
fi

mkdir -p "$(dirname "$OUT_DIR")"
command -v flock >/dev/null 2>&1 ||
  { echo "error: flock is required (apt-get install -y util-linux)" >&2; exit 1; }
exec 9>"$OUT_DIR.lock"
if ! flock -n 9; then
  echo "another run is fetching the third-party CRDs into $OUT_DIR; waiting for it" >&2
  flock 9
fi
if [[ -f "$OUT_DIR/.complete" ]]; then
  echo "$OUT_DIR"
  exit 0
fi
command -v go >/dev/null 2>&1 ||
  { echo "error: Go is required once to fetch the third-party CRDs (install Go 1.26 or newer)" >&2; exit 1; }

# `go mod download` outside a module prints the module's directory in the module cache.
module_dir() { # module_dir MODULE@VERSION
  local dir
  dir="$(cd / && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { echo "error: could not download $1 from the Go module proxy" >&2; exit 1; }
  echo "$dir"
}

echo "fetching the monitoring.coreos.com and cert-manager.io CRDs (prometheus-operator $PROMETHEUS_OPERATOR_VERSION, cert-manager $CERT_MANAGER_VERSION) from the Go module proxy, once" >&2
prometheus="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
cert_manager="$(module_dir "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION")"
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
for kind in servicemonitors prometheusrules; do
  cp "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$OUT_DIR/"
done
for kind in certificates issuers clusterissuers; do
  cp "$cert_manager/deploy/crds/cert-manager.io_$kind.yaml" "$OUT_DIR/"
done
chmod -R u+w "$OUT_DIR"
touch "$OUT_DIR/.complete"
echo "$OUT_DIR"
