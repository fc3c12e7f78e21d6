#!/usr/bin/env bash
# Backend churn under load: wrk through Basalt's LB while the backend set changes
# CHANGES_PER_MIN times a minute through the master's event stream; then the same churn
# against HAProxy driven as marathon-lb drove it (rewrite haproxy.cfg, SIGUSR2 to the
# master-worker, listeners passed with -x over the stats socket). Prints failed requests,
# p99 and max latency for each, beside a run of each without churn.
#
#   bash bench/lb_churn.sh [SECONDS=300] [CHANGES_PER_MIN=100] [BACKENDS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-300}
RATE=${2:-100}
NB=${3:-6}

need=()
for c in wrk haproxy nginx cmake; do command -v "$c" >/dev/null 2>&1 || need+=("$c"); done
if ((${#need[@]})); then
  pkgs=("${need[@]/nginx/nginx-light}")
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  # Debian starts the packaged services on install; they are not part of the measurement
  # (and would hold port 80). Only what this script just installed is stopped.
  for svc in haproxy nginx; do
    case " ${need[*]} " in *" $svc "*) service "$svc" stop >/dev/null 2>&1 || pkill -x "$svc" || true ;; esac
  done
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
# BASALT_PREBUILT=1 skips the build (use the release binaries already in the target dir).
[ -n "${BASALT_PREBUILT:-}" ] || cargo build --release -q -p basalt --bin basalt --example lb_churn
BIN=$CARGO_TARGET_DIR/release/basalt
CHURN=$CARGO_TARGET_DIR/release/examples/lb_churn
W=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pkill -f "$W/haproxy.cfg" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT

base=$((20000 + RANDOM % 20000))
MASTER=$base LBP=$((base + 1)) LBS=$((base + 2)) LBA=$((base + 3)) HAP=$((base + 4))
# The backends: one nginx (1 worker) listening on NB ports, so every backend is always up
# and only the proxies' handling of the change is measured.
ports=()
listens=""
for i in $(seq 1 "$NB"); do
  p=$((base + 100 + i)); ports+=("$p"); listens+="listen 127.0.0.1:$p; "
done
PORTS=$(IFS=,; echo "${ports[*]}")
cat >"$W/backend.conf" <<EOF
worker_processes 1; daemon off; pid $W/backend.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $listens location / { return 200 "ok\n"; } } }
EOF
nginx -e stderr -p "$W" -c "$W/backend.conf" >"$W/backend.log" 2>&1 & pids+=($!)

"$BIN" master --data-dir "$W/m" --port "$MASTER" --agent-timeout 1h --agent-reregister-timeout 1h --ready-file "$W/m.ready" >"$W/m.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/m.ready" ] && break; sleep 0.1; done
BASALT_LOG=warn "$BIN" lb --master "http://127.0.0.1:$MASTER" --ip 127.0.0.1 --threads 1 \
  --lb-http-port "$LBP" --lb-stats-port "$LBS" --lb-app-id-port "$LBA" \
  --ready-file "$W/lb.ready" >"$W/lb.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/lb.ready" ] && break; sleep 0.1; done

"$CHURN" haproxy-cfg "$W/haproxy.cfg" "$HAP" "$PORTS"
haproxy -W -db -f "$W/haproxy.cfg" -x "$W/haproxy.sock" >"$W/haproxy.log" 2>&1 & pids+=($!)
HAP_PID=$!

summary() { # name wrk-output
  echo "$2" | python3 -c '
import re, sys
name, text = sys.argv[1], sys.stdin.read()
total = int(re.search(r"(\d+) requests in", text).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
p99 = float(m.group(1)) * unit[m.group(2)]
mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
mxv = float(mx.group(1)) * unit[mx.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
non2xx = int(errs.group(1)) if errs else 0
socket = sum(map(int, sock.groups())) if sock else 0
print(f"  {name:34} {total:9d} requests  failed {non2xx + socket:6d} (non-2xx {non2xx}, socket {socket})  p99 {p99:7.2f} ms  max {mxv:8.2f} ms")
' "$1"
}

WRK=(wrk -t1 -c50 --latency -H 'Host: bench.local')
echo "wrk -t1 -c50, $NB backends (half serving), $RATE changes/min, ${SECS}s per churn run"
"$CHURN" basalt "http://127.0.0.1:$MASTER" "$PORTS" "$RATE" "$SECS" >"$W/churn-basalt.log" & cp=$!
# The driver registers the backends, then waits one period before the first change.
for _ in $(seq 1 100); do curl -sf -H 'Host: bench.local' "http://127.0.0.1:$LBP/" >/dev/null && break; sleep 0.05; done
out=$("${WRK[@]}" -d"${SECS}s" "http://127.0.0.1:$LBP/")
wait "$cp"
summary "basalt LB under churn ($(cut -d: -f2 "$W/churn-basalt.log" | xargs))" "$out"
summary "basalt LB, no churn (10 s)" "$("${WRK[@]}" -d10s "http://127.0.0.1:$LBP/")"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HAP/" >/dev/null && break; sleep 0.1; done
summary "haproxy, no churn (10 s)" "$("${WRK[@]}" -d10s "http://127.0.0.1:$HAP/")"
"$CHURN" haproxy "$W/haproxy.cfg" "$HAP_PID" "$HAP" "$PORTS" "$RATE" "$SECS" >"$W/churn-haproxy.log" & cp=$!
out=$("${WRK[@]}" -d"${SECS}s" "http://127.0.0.1:$HAP/")
wait "$cp"
summary "haproxy reload under churn ($(cut -d: -f2 "$W/churn-haproxy.log" | xargs))" "$out"
echo "  haproxy processes at the end: $(pgrep -fc "$W/haproxy.cfg" || true) (old workers linger while their connections live)"
