#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing, starts a real control
# plane on loopback (unless ASO_TEST_KUBECONFIG already names a cluster), runs every tier, and
# stops what it started.
#
#   make test                         # or: hack/test.sh
#   ASO_TEST_KUBECONFIG=~/.kube/config make test   # against an existing cluster instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "error: '$*' needs root; run it once as root, then re-run make test" >&2; exit 1; fi; }
apt_updated=false
need_apt() { # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (provides $1)" >&2
  if [[ $apt_updated == false ]]; then as_root apt-get update -qq; apt_updated=true; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

need_apt openssl openssl
need_apt curl curl
# promtool (alert unit tests) and a real Prometheus (tests/alerts.rs). The tests start their own
# Prometheus on a free loopback port; a packaged service, if the host starts one, is not used.
need_apt promtool prometheus

# The chart tier's tools (hack/chart-requirements.txt) in a venv outside the checkout, reused
# while the pinned requirements stay the same; tests find it through ASO_TEST_VENV.
chart_venv() {
  local venv="${ASO_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/amazon-seller-operator/venv}"
  local stamp="$venv/.requirements" wanted
  wanted="$(cat hack/chart-requirements.txt)"
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    need_apt python3 python3
    echo "installing the chart tools into $venv (helm-python-sdk, kubernetes-validate)" >&2
    if [[ ! -x "$venv/bin/python" ]]; then
      python3 -m venv "$venv" 2>/dev/null || { need_apt_pkg python3-venv; python3 -m venv "$venv"; }
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r hack/chart-requirements.txt
    printf '%s' "$wanted" >"$stamp"
  fi
  export ASO_TEST_VENV="$venv"
}
need_apt_pkg() { # need_apt_pkg PACKAGE: install a package that provides no command
  if [[ $apt_updated == false ]]; then as_root apt-get update -qq; apt_updated=true; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
chart_venv

state=""
cleanup() { if [[ -n "$state" ]]; then hack/control-plane/stop.sh "$state"; rm -rf "$state"; fi; }
trap cleanup EXIT

if [[ -z "${ASO_TEST_KUBECONFIG:-}" ]]; then
  need_apt etcd etcd-server
  # etcdctl: tests read what the API server stored for a Secret straight from etcd.
  need_apt etcdctl etcd-client
  state="$(mktemp -d -t aso-control-plane.XXXXXX)"
  echo "starting the test control plane (etcd, kube-apiserver, kube-controller-manager) in $state" >&2
  ASO_TEST_KUBECONFIG="$(hack/control-plane/start.sh "$state")"
  export ASO_TEST_KUBECONFIG
fi

# The chart tier applies the monitoring.coreos.com and cert-manager.io CRDs of those projects
# (pinned, from the Go module proxy, once) before the chart's ServiceMonitor, PrometheusRule
# and Certificate; fetch them here so a missing Go is named before any test runs.
hack/control-plane/third-party-crds.sh >/dev/null

# The demo test runs the LWA emulator example as its own process; `cargo test` builds
# examples only as test harnesses, so build the runnable one first.
cargo build --locked --example lwa_emulator
cargo test --all-targets --locked
