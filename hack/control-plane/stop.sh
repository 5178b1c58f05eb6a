#!/usr/bin/env bash
# Stops a control plane started by start.sh STATE_DIR. Safe to call twice.
set -uo pipefail
state="${1:?usage: stop.sh STATE_DIR}"
for name in controller-manager apiserver etcd; do
  pidfile="$state/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid="$(cat "$pidfile")"
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done
