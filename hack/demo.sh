#!/usr/bin/env bash
# The operator's whole job on one machine, in a few minutes, without a cluster or Amazon:
# a real control plane on loopback, a LOCAL LWA EMULATOR (never Amazon), the operator's own
# `run` (controller, admission webhook registered with the API server, metrics), a Team
# namespace, sealed demo credentials, a connection, a gateway pod, and two Teams set up as on a
# real cluster (RBAC per namespace): RBAC refusing another Team's read of the connection, and
# the webhook refusing another Team's gateway pod that RBAC let through. The demo checks each
# refusal itself and stops if a layer lets the request through.
#
# The first run builds the operator (about 5 minutes on 2 cores, cached in target/) and
# kube-apiserver (about 5 more, cached in ~/.cache/amazon-seller-operator/control-plane/); later
# runs start in about a minute.
#
#   hack/demo.sh          # start (or: make demo); leaves everything running
#   hack/demo.sh stop     # stop everything (or: make demo-stop)
#
# With real credentials (ASO_DEMO_CREDENTIALS=DIR, or: make demo CREDENTIALS=DIR) no emulator
# is started: the operator calls Amazon's real LWA token endpoint with the credentials in DIR
# (files client-id, client-secret, refresh-token, seller-id, and optionally marketplace, default
# US). The credentials are read from those files only and sealed at once; no token is printed.
#
# ASO_DEMO_DIR sets where state and logs go (default ~/.cache/amazon-seller-operator/demo).
# ASO_BIN and ASO_EMULATOR_BIN use prebuilt binaries instead of building them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
state="${ASO_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/amazon-seller-operator/demo}"

stop() {
  for name in operator lwa-emulator; do
    if [[ -f "$state/$name.pid" ]]; then
      pid="$(cat "$state/$name.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
  if [[ -d "$state/plane" ]]; then hack/control-plane/stop.sh "$state/plane"; fi
  echo "demo stopped (logs stay in $state)"
}

if [[ "${1:-start}" == "stop" ]]; then
  stop
  exit 0
fi
credentials="${ASO_DEMO_CREDENTIALS:-}"

fail() { echo "demo: $*" >&2; exit 1; }
# Whatever stops the demo half-way stops what it had started, so nothing is left running.
on_exit() { local rc=$?; if [[ $rc -ne 0 && -d "$state" ]]; then stop >/dev/null 2>&1 || true; fi; exit $rc; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- prerequisites, each with its fix
cached="${ASO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/amazon-seller-operator}/control-plane/${ASO_K8S_VERSION:-v1.36.3}"
command -v go >/dev/null || { [[ -x "$cached/kube-apiserver" ]] && [[ -x "$cached/kube-controller-manager" ]]; } ||
  fail "Go is needed once to build kube-apiserver and kube-controller-manager: install Go 1.26+ (https://go.dev/dl) and put it on PATH"
command -v etcd >/dev/null || fail "etcd is missing: sudo apt-get install -y etcd-server"
command -v kubectl >/dev/null || fail "kubectl is missing: install kubectl (https://kubernetes.io/docs/tasks/tools/)"
for tool in curl openssl python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing: sudo apt-get install -y $tool"
done
if [[ -n "$credentials" ]]; then
  for file in client-id client-secret refresh-token seller-id; do
    [[ -s "$credentials/$file" ]] ||
      fail "real-credentials mode: $credentials/$file is missing or empty (put the LWA client id, client secret, refresh token and the seller's merchant token in files of these names)"
  done
  credentials="$(cd "$credentials" && pwd)"
fi
if [[ -f "$state/operator.pid" ]] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
  fail "a demo is already running from $state: stop it with 'make demo-stop'"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics_port="${ASO_DEMO_METRICS_PORT:-$(free_port)}"
python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$metrics_port))" 2>/dev/null ||
  fail "port $metrics_port is in use: set ASO_DEMO_METRICS_PORT to a free port"
webhook_port="${ASO_DEMO_WEBHOOK_PORT:-$(free_port)}"
python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$webhook_port))" 2>/dev/null ||
  fail "port $webhook_port is in use: set ASO_DEMO_WEBHOOK_PORT to a free port"

step "building what the demo runs"
if [[ -z "${ASO_BIN:-}" || -z "${ASO_EMULATOR_BIN:-}" ]]; then
  target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  if [[ -x "$target/debug/amazon-seller-operator" && -x "$target/debug/examples/lwa_emulator" ]]; then
    echo "the operator and the LWA emulator (cargo build, incremental; cached in $target)"
    cargo build --quiet --bin amazon-seller-operator --example lwa_emulator
  else
    echo "the operator and the LWA emulator: the first build compiles about 350 crates, about"
    echo "5 minutes on 2 cores, once (cached in $target; later runs take seconds)"
    cargo build --bin amazon-seller-operator --example lwa_emulator
  fi
  ASO_BIN="${ASO_BIN:-$target/debug/amazon-seller-operator}"
  ASO_EMULATOR_BIN="${ASO_EMULATOR_BIN:-$target/debug/examples/lwa_emulator}"
fi
aso() { "$ASO_BIN" "$@"; }
# kube-apiserver: built from the Go module proxy the first time (about 5 more minutes), then
# reused; build.sh says what it does, and waits if another demo or test run is building it.
apiserver="$(hack/control-plane/build.sh)"
echo "kube-apiserver: $apiserver"

rm -rf "$state"
mkdir -p "$state"
trap on_exit EXIT
step "starting etcd + kube-apiserver on loopback"
export KUBECONFIG
KUBECONFIG="$(hack/control-plane/start.sh "$state/plane")"
echo "kubeconfig: $KUBECONFIG"
aso crd | kubectl apply -f - >/dev/null
kubectl wait --for condition=Established crd --all --timeout 60s >/dev/null
kubectl create namespace amazon-seller-operator >/dev/null

if [[ -z "$credentials" ]]; then
  step "starting the LWA EMULATOR (local, never contacts Amazon)"
  "$ASO_EMULATOR_BIN" "$state/lwa" >"$state/lwa-emulator.log" 2>&1 &
  echo $! >"$state/lwa-emulator.pid"
  for _ in $(seq 1 100); do [[ -f "$state/lwa/url" ]] && break; sleep 0.1; done
  [[ -f "$state/lwa/url" ]] || fail "the LWA emulator did not start (log: $state/lwa-emulator.log)"
  head -n1 "$state/lwa-emulator.log"
  lwa_flags=(--lwa-endpoint "$(cat "$state/lwa/url")" --lwa-ca-file "$state/lwa/ca.pem")
  credentials="$state/lwa"
  seller_id=A3FHEXAMPLEYWS
  marketplace=US
else
  step "REAL CREDENTIALS: the operator calls Amazon's LWA token endpoint (no emulator)"
  lwa_flags=()
  seller_id="$(tr -d '[:space:]' <"$credentials/seller-id")"
  marketplace="$( (tr -d '[:space:]' <"$credentials/marketplace") 2>/dev/null || true)"
  marketplace="${marketplace:-US}"
  echo "credentials from $credentials (files only), seller $seller_id, marketplace $marketplace"
fi

step "starting the operator (amazon-seller-operator run) as its own ServiceAccount"
# The webhook lets only the operator's ServiceAccount write runtime Secrets, so the operator
# runs as that ServiceAccount. The demo binds it to cluster-admin for brevity; the Helm chart
# grants only the rules the code declares (docs/install.md).
kubectl create serviceaccount amazon-seller-operator -n amazon-seller-operator >/dev/null
kubectl create clusterrolebinding amazon-seller-operator-demo --clusterrole cluster-admin \
  --serviceaccount amazon-seller-operator:amazon-seller-operator >/dev/null
operator_kubeconfig="$state/operator.kubeconfig"
cp "$KUBECONFIG" "$operator_kubeconfig"
KUBECONFIG="$operator_kubeconfig" kubectl config set-credentials amazon-seller-operator \
  --token "$(kubectl create token amazon-seller-operator -n amazon-seller-operator --duration 24h)" >/dev/null
KUBECONFIG="$operator_kubeconfig" kubectl config set-context --current --user amazon-seller-operator >/dev/null
# Started directly, not through the `aso` function, so `$!` is the operator's own pid. The
# webhook keeps its own CA and certificate (self-managed) and writes the CA into the
# configurations registered below.
KUBECONFIG="$operator_kubeconfig" "$ASO_BIN" run --operator-namespace amazon-seller-operator --leader-election=false \
  "${lwa_flags[@]}" \
  --metrics-addr "127.0.0.1:$metrics_port" --log-format json \
  --webhook-addr "127.0.0.1:$webhook_port" --webhook-cert-mode self-managed --webhook-extra-san 127.0.0.1 \
  >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$state/operator.pid")" 2>/dev/null || { tail -n 5 "$state/operator.log" >&2; fail "the operator exited (log: $state/operator.log)"; }
  sleep 0.2
done
echo "operator ready; metrics on http://127.0.0.1:$metrics_port/metrics"

step "registering the admission webhook with the API server (fail closed)"
aso webhook-configuration --webhook-url "https://127.0.0.1:$webhook_port" | kubectl apply -f -
ca_bundle=""
for _ in $(seq 1 150); do
  ca_bundle="$(kubectl get validatingwebhookconfiguration amazon-seller-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
  [[ -n "$ca_bundle" ]] && break
  sleep 0.2
done
[[ -n "$ca_bundle" ]] || fail "the operator did not put its CA into the webhook configuration (log: $state/operator.log)"
echo "$ca_bundle" | base64 -d >"$state/webhook-ca.pem"
for _ in $(seq 1 150); do
  curl -fsS --cacert "$state/webhook-ca.pem" "https://127.0.0.1:$webhook_port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS --cacert "$state/webhook-ca.pem" "https://127.0.0.1:$webhook_port/readyz" >/dev/null ||
  fail "the webhook did not become ready (log: $state/operator.log)"
echo "webhook ready on https://127.0.0.1:$webhook_port (its CA is in both configurations)"

step "a Team namespace, sealed credentials, a connection and a gateway pod"
kubectl apply -f examples/team-namespace.yaml
for _ in $(seq 1 50); do kubectl get configmap -n amazon-seller-operator amazon-seller-operator-public-key >/dev/null 2>&1 && break; sleep 0.2; done
aso seal --public-key-from-cluster --operator-namespace amazon-seller-operator \
  --team acme --namespace team-acme --name acme-us-lwa --connection acme-us \
  --client-id "$(tr -d '[:space:]' <"$credentials/client-id")" \
  --client-secret-file "$credentials/client-secret" --refresh-token-file "$credentials/refresh-token" \
  >"$state/sealed-secret.yaml"
echo "sealed with the operator's public key: $(grep -c . "$state/sealed-secret.yaml") lines, no plaintext"
kubectl apply -f "$state/sealed-secret.yaml"
# examples/connection.yaml, with the seller and marketplace of the credentials in use.
sed -e "s/^  sellerId: .*/  sellerId: $seller_id/" -e "s/^  marketplace: .*/  marketplace: $marketplace/" \
  examples/connection.yaml | kubectl apply -f -
kubectl create serviceaccount default -n team-acme >/dev/null 2>&1 || true
kubectl apply -f - <<'POD'
apiVersion: v1
kind: Pod
metadata:
  name: gateway
  namespace: team-acme
  labels: {connectors.openteam.io/gateway: gw-main}
spec:
  containers:
  - name: gateway
    image: registry.example/gateway:1
    volumeMounts: [{name: sp-api, mountPath: /var/run/sp-api, readOnly: true}]
  volumes:
  - name: sp-api
    secret: {secretName: acme-us-sp-api}
POD
kubectl wait --for condition=Ready asc/acme-us -n team-acme --timeout 60s >/dev/null ||
  fail "the connection did not become Ready (log: $state/operator.log)"

step "the connection (kubectl get asc -n team-acme, and -o wide)"
kubectl get asc -n team-acme
kubectl get asc -n team-acme -o wide

step "the runtime Secret acme-us-sp-api (the token is masked here)"
kubectl get secret acme-us-sp-api -n team-acme -o json | python3 -c '
import base64, json, sys
secret = json.load(sys.stdin)
print("type:", secret["type"])
for key, value in sorted(secret["data"].items()):
    text = base64.b64decode(value).decode()
    if key == "access_token":
        text = text[:5] + "…(" + str(len(text)) + " characters, masked)"
    print(f"  {key}: {text}")'

step "suspend: containment removes runtime access at once"
kubectl patch asc acme-us -n team-acme --type merge -p '{"spec":{"suspended":true}}' >/dev/null
for _ in $(seq 1 50); do kubectl get secret acme-us-sp-api -n team-acme >/dev/null 2>&1 || break; sleep 0.2; done
if kubectl get secret acme-us-sp-api -n team-acme >/dev/null 2>&1; then fail "suspend did not remove the runtime Secret"; fi
echo "runtime Secret acme-us-sp-api: gone"
kubectl get asc -n team-acme
kubectl patch asc acme-us -n team-acme --type merge -p '{"spec":{"suspended":false}}' >/dev/null
kubectl wait --for condition=Ready asc/acme-us -n team-acme --timeout 60s >/dev/null
echo "unsuspended: runtime Secret restored"

step "Teams on a shared cluster: each Team's RBAC only in its own namespace"
# As on a real cluster: a Team's members (group openteam:team:<team>) may work with connections,
# credentials and pods in their own namespace only (a RoleBinding there), and the platform's
# deploy pipeline may create pods in every namespace.
kubectl apply -f - >/dev/null <<'RBAC'
apiVersion: v1
kind: Namespace
metadata:
  name: team-globex
  labels: {connectors.openteam.io/team: globex}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-team-member}
rules:
- apiGroups: [connectors.openteam.io]
  resources: [amazonsellerconnections]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods, secrets]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: team-members, namespace: team-acme}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-team-member}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "openteam:team:acme"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: team-members, namespace: team-globex}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-team-member}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "openteam:team:globex"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-deployer}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, create, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-deployer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-deployer}
subjects:
- {kind: ServiceAccount, name: deployer, namespace: default}
RBAC
echo "RoleBinding team-members in team-acme (group openteam:team:acme) and in team-globex (openteam:team:globex)"
echo "ClusterRoleBinding demo-deployer: the deploy pipeline (ServiceAccount default/deployer) creates pods everywhere"
bob=(--as bob --as-group openteam:team:globex)
echo "bob (team globex) in his own namespace:"
kubectl "${bob[@]}" get asc -n team-globex 2>&1 | sed 's/^/  /'

# refused LAYER COMMAND...: the command must fail, and for the reason LAYER gives: RBAC's
# "forbidden" from the API server, or the admission webhook's denial with its reason. The
# demo stops if either layer lets the request through.
refused() {
  local layer="$1" pattern
  shift
  case "$layer" in
    rbac) pattern='is forbidden: User "[^"]*" cannot' ;;
    webhook) pattern='admission webhook "[^"]*" denied the request' ;;
  esac
  if "$@" >"$state/refused.out" 2>&1; then
    cat "$state/refused.out"
    fail "expected a refusal by $layer, but it was allowed: $*"
  fi
  sed 's/^/  /' "$state/refused.out"
  grep -Eq "$pattern" "$state/refused.out" ||
    fail "expected a refusal by $layer, got another error: $*"
  echo "  -> refused by $layer"
}

step "another Team reads acme's connection: refused by RBAC"
refused rbac kubectl "${bob[@]}" get asc acme-us -n team-acme

step "another Team's gateway pod mounts acme's runtime Secret: refused by the webhook"
# RBAC lets the deploy pipeline create pods in team-acme; only the webhook knows that the pipeline
# is not one of Team acme's, and that gw-globex is not one of acme-us's gateways.
refused webhook kubectl --as system:serviceaccount:default:deployer apply -f - <<'POD'
apiVersion: v1
kind: Pod
metadata:
  name: globex-gateway
  namespace: team-acme
  labels: {connectors.openteam.io/gateway: gw-globex}
spec:
  containers:
  - name: gateway
    image: registry.example/gateway:1
    volumeMounts: [{name: sp-api, mountPath: /var/run/sp-api, readOnly: true}]
  volumes:
  - name: sp-api
    secret: {secretName: acme-us-sp-api}
POD
echo
echo "RBAC stopped the read (bob has no RoleBinding in team-acme); the webhook stopped the pod (RBAC allowed it, but the pipeline is not in Team acme and gw-globex is not in acme-us spec.gateways)."

step "audit log (JSON lines, SHA-256 hash chain)"
grep '"log_type":"audit"' "$state/operator.log" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    who = "/".join(x for x in (r.get("namespace"), r.get("connection")) if x)
    reason = r.get("reason") or ""
    print("  #%-3s %-18s %-22s %-8s %s %s" % (r["seq"], r["category"], r["action"], r["outcome"], who, reason))'
aso audit verify "$state/operator.log"

step "a few metrics"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^amazon_seller_(connections|token_expiry_timestamp_seconds|token_refresh_total|reconcile_total|credential_access_total|admission_requests_total\{[^}]*decision="denied"|audit_events_total\{category="(connector_setup|authentication)")' || true

cat <<DONE

The control plane keeps running. Explore it with:
  export KUBECONFIG=$KUBECONFIG
  kubectl get asc,secrets -n team-acme
  kubectl --as bob --as-group openteam:team:globex get asc -n team-globex    # bob's own Team
  kubectl --as bob --as-group openteam:team:globex get asc -n team-acme     # forbidden by RBAC
Logs: $state/operator.log (the operator), $state/lwa-emulator.log (the emulator)
Stop everything with: make demo-stop
DONE
