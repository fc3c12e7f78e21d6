#!/usr/bin/env bash
# init deployment speed: one app of N instances (`sleep 3600`, tiny resources) through
# `basalt up`, seconds from POST /v2/apps until its deployment is finished, and tasks/s.
# Marathon's published figure (perf-anchors.md): 500 instances on 189 agents in 14.18 s.
#   bash bench/init_deploy.sh [INSTANCES=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
cargo build --release -q -p basalt --bin basalt
BIN=$CARGO_TARGET_DIR/release/basalt
W=$(mktemp -d)
base=$((20000 + RANDOM % 20000))
"$BIN" up --data-dir "$W" --master-port "$base" --agent-port $((base + 1)) --init-port $((base + 2)) --no-dns --no-universe \
  --resources "cpus:64;mem:65536;disk:10000;ports:[31000-32000]" --ready-file "$W/ready" >"$W/up.log" 2>&1 &
pid=$!
# Tasks outlive `basalt up` by design (an agent restart must not kill them): end them by
# their sandboxes, which live under $W.
kill_tasks() {
  local p
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$W"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
}
cleanup() { kill_tasks; kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; kill_tasks; rm -rf "$W"; }
trap cleanup EXIT
for _ in $(seq 1 100); do [ -s "$W/ready" ] && break; sleep 0.1; done
INIT="http://127.0.0.1:$((base + 2))"
python3 - "$INIT" "$N" <<'PY'
import json, sys, time, urllib.request
init, n = sys.argv[1], int(sys.argv[2])
def call(method, path, body=None):
    req = urllib.request.Request(init + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")
t0 = time.time()
call("POST", "/v2/apps", {"id": "/bench", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8,
                          "instances": n, "portDefinitions": []})
while True:
    app = call("GET", "/v2/apps/bench")["app"]
    if app["tasksRunning"] == n and not app["deployments"]:
        break
    if time.time() - t0 > 900:
        sys.exit(f"not done after 900 s: {app['tasksRunning']} running")
    time.sleep(0.05)
took = time.time() - t0
print(f"init deployed {n} instances in {took:.2f} s = {n / took:.0f} tasks/s "
      f"(Marathon 0.15/Mesos 0.27: 500 instances in 14.18 s = 35 tasks/s, {n / took / 35.3:.1f}x)")
call("DELETE", "/v2/apps/bench")
PY
