#!/usr/bin/env bash
# Builds a real Kubernetes component (kube-apiserver by default, or kube-controller-manager)
# from the Go module proxy into a cache outside the checkout.
#
# k8s.io/kubernetes is not meant to be consumed as a module: its go.mod requires every
# staging module (k8s.io/api, k8s.io/apiserver, ...) at v0.0.0 and replaces them with
# ./staging paths. We read that replace block from the published go.mod and point each
# staging module at its published v0.<minor>.<patch> tag instead, which is the same code.
#
# Usage: build.sh [kube-apiserver|kube-controller-manager]
# Prints the path of the binary on stdout; progress goes to stderr.
#
# Two runs at once (two demos, a demo and a test run) must not build into the same directory:
# the build holds a lock (flock on $OUT_DIR.lock), and a second run waits for the first, says so,
# and then uses its binary. A binary that is already there is used without taking the lock.
set -euo pipefail

COMPONENT="${1:-kube-apiserver}"
case "$COMPONENT" in
  kube-apiserver|kube-controller-manager) ;;
  *) echo "error: unknown component $COMPONENT (kube-apiserver or kube-controller-manager)" >&2; exit 2 ;;
esac
K8S_VERSION="${ASO_K8S_VERSION:-v1.36.3}"
CACHE_ROOT="${ASO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/amazon-seller-operator}"
OUT_DIR="$CACHE_ROOT/control-plane/$K8S_VERSION"
BIN="$OUT_DIR/$COMPONENT"

built() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }
if built; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$OUT_DIR"
command -v flock >/dev/null 2>&1 ||
  { echo "error: flock is required (apt-get install -y util-linux)" >&2; exit 1; }
exec 9>"$OUT_DIR.lock"
if ! flock -n 9; then
  echo "another run is building $COMPONENT $K8S_VERSION into $OUT_DIR; waiting for it to finish" >&2
  flock 9
fi
if built; then
  echo "$COMPONENT $K8S_VERSION is ready (built by the other run)" >&2
  echo "$BIN"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is required to build $COMPONENT (install Go 1.26 or newer and put it on PATH)" >&2
  exit 1
fi

staging_version="v0.${K8S_VERSION#v1.}"
# One work directory per component: two components may be built at the same time.
work="$OUT_DIR/build-$COMPONENT"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

echo "building $COMPONENT $K8S_VERSION from the Go module proxy: once, about 5 minutes on 2 cores" >&2
echo "  (later runs reuse it from $OUT_DIR; downloads go to Go's module cache, $(go env GOMODCACHE))" >&2
gomod_file=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
if [[ ! -f "$gomod_file" ]]; then
  echo "error: could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy" >&2
  exit 1
fi
go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod_file" | head -n1)

{
  echo "module aso.local/control-plane"
  echo
  echo "go ${go_directive}"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$#\t\1 => \1 '"$staging_version"'#p' "$gomod_file"
  echo ")"
} > go.mod

cat > tools.go <<GO
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/$COMPONENT"
GO

go mod tidy >&2
echo "compiling $COMPONENT (the longest step; no output until it is done)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION" \
  -o "$BIN.tmp" "k8s.io/kubernetes/cmd/$COMPONENT" >&2
mv "$BIN.tmp" "$BIN"
cd /
rm -rf "$work"
echo "kube-apiserver $K8S_VERSION built: $BIN" >&2
echo "$BIN"
