#!/usr/bin/env bash
# Starts a real control plane on loopback: etcd plus kube-apiserver with TLS, RBAC, a
# ServiceAccount issuer and signing key (TokenRequest/TokenReview work) and an admin kubeconfig.
# The API server's audit log (audit.log in the state directory) is written with the audit policy
# docs/security-model.md recommends (deploy/audit-policy.yaml), so tests can check it too.
# OwnerReferencesPermissionEnforcement is on, as in many production clusters: an owner reference
# with blockOwnerDeletion then needs update on the owner's finalizers, and the RBAC tier
# (tests/rbac.rs) would catch a chart that lacks it.
# A kube-controller-manager runs only the deployment and replicaset controllers, with a
# ServiceAccount per controller (--use-service-account-credentials, as kubeadm sets it): a
# Deployment gets its ReplicaSet and pods from the real controllers, as the identities the
# admission webhook sees in a cluster. Otherwise, like controller-runtime's envtest, there is no
# kubelet, scheduler or other controller: pods are stored but never run, and nothing
# garbage-collects.
#
# Usage: start.sh STATE_DIR
# Prints the kubeconfig path on stdout; stop with stop.sh STATE_DIR. The state directory also
# holds etcd-endpoint (the etcd client URL, for tests that read what was stored).
set -euo pipefail

state="${1:?usage: start.sh STATE_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$state"
state="$(cd "$state" && pwd)"

fail() { echo "error: $*" >&2; exit 1; }

for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is required (apt-get install -y $tool)"
done
ETCD="${ETCD:-$(command -v etcd || true)}"
[[ -n "$ETCD" ]] || fail "etcd is required: apt-get install -y etcd-server (or set ETCD=/path/to/etcd)"
APISERVER="$("$here/build.sh")"
CONTROLLER_MANAGER="$("$here/build.sh" kube-controller-manager)"

if [[ -f "$state/apiserver.pid" ]] && kill -0 "$(cat "$state/apiserver.pid")" 2>/dev/null; then
  fail "a control plane is already running from $state (stop it with $here/stop.sh $state)"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port="$(free_port)"
etcd_peer_port="$(free_port)"
api_port="${ASO_APISERVER_PORT:-$(free_port)}"

# --- certificates: one CA for serving and clients, a serving cert for 127.0.0.1, an admin client
pki="$state/pki"
mkdir -p "$pki"
ossl() { openssl "$@" >/dev/null 2>&1 || fail "openssl $1 failed"; }
if [[ ! -f "$pki/ca.crt" ]]; then
  ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -subj "/CN=aso-test-ca"
  ossl req -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    -subj "/CN=kube-apiserver"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > "$pki/apiserver.ext"
  ossl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -out "$pki/apiserver.crt" -extfile "$pki/apiserver.ext"
  ossl req -newkey rsa:2048 -nodes -keyout "$pki/admin.key" -out "$pki/admin.csr" \
    -subj "/O=system:masters/CN=aso-test-admin"
  printf 'extendedKeyUsage=clientAuth\n' > "$pki/admin.ext"
  ossl x509 -req -in "$pki/admin.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -out "$pki/admin.crt" -extfile "$pki/admin.ext"
  ossl genrsa -out "$pki/sa.key" 2048
  ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
fi
if [[ ! -f "$pki/controller-manager.crt" ]]; then
  # The identity the bootstrap RBAC policy gives the controller-manager.
  ossl req -newkey rsa:2048 -nodes -keyout "$pki/controller-manager.key" \
    -out "$pki/controller-manager.csr" -subj "/CN=system:kube-controller-manager"
  ossl x509 -req -in "$pki/controller-manager.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -out "$pki/controller-manager.crt" -extfile "$pki/admin.ext"
fi

# --- etcd
rm -rf "$state/etcd-data"
"$ETCD" --name aso-test --data-dir "$state/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "aso-test=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --log-level warn >"$state/etcd.log" 2>&1 &
echo $! >"$state/etcd.pid"
echo "http://127.0.0.1:$etcd_port" >"$state/etcd-endpoint"

# --- kube-apiserver
"$APISERVER" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode RBAC \
  --enable-admission-plugins OwnerReferencesPermissionEnforcement \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.0.0.0/24 \
  --enable-priority-and-fairness=false \
  --audit-policy-file "$here/../../deploy/audit-policy.yaml" \
  --audit-log-path "$state/audit.log" --audit-log-maxsize 50 --audit-log-maxbackup 1 \
  --allow-privileged=false \
  --endpoint-reconciler-type none \
  --v 1 >"$state/apiserver.log" 2>&1 &
echo $! >"$state/apiserver.pid"

b64() { base64 -w0 <"$1"; }
kubeconfig() { # kubeconfig USER CERT_PREFIX
  cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: aso-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(b64 "$pki/$2.crt")
    client-key-data: $(b64 "$pki/$2.key")
contexts:
- name: aso-test
  context: {cluster: aso-test, user: $1}
current-context: aso-test
KUBECONFIG
}
kubeconfig aso-test-admin admin >"$state/kubeconfig"
kubeconfig system:kube-controller-manager controller-manager >"$state/controller-manager.kubeconfig"

start_controller_manager() {
  "$CONTROLLER_MANAGER" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --controllers deployment,replicaset \
    --use-service-account-credentials \
    --leader-elect=false \
    --secure-port 0 \
    --v 1 >"$state/controller-manager.log" 2>&1 &
  echo $! >"$state/controller-manager.pid"
}

# --- wait until ready (the first start runs all post-start hooks: bootstrap RBAC etc.)
for _ in $(seq 1 120); do
  if curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
      "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
    start_controller_manager
    sleep 1
    if ! kill -0 "$(cat "$state/controller-manager.pid")" 2>/dev/null; then
      tail -n 20 "$state/controller-manager.log" >&2
      "$here/stop.sh" "$state" || true
      fail "kube-controller-manager exited during start-up (log: $state/controller-manager.log)"
    fi
    echo "$state/kubeconfig"
    exit 0
  fi
  if ! kill -0 "$(cat "$state/apiserver.pid")" 2>/dev/null; then
    tail -n 20 "$state/apiserver.log" >&2
    "$here/stop.sh" "$state" || true
    fail "kube-apiserver exited during start-up (log: $state/apiserver.log)"
  fi
  sleep 0.5
done
tail -n 20 "$state/apiserver.log" >&2
"$here/stop.sh" "$state" || true
fail "kube-apiserver did not become ready within 60 s (log: $state/apiserver.log)"
