#!/usr/bin/env bash
# HTTP proxying throughput: Basalt's LB vs HAProxy vs nginx (Debian's), each with the same
# number of workers, in front of the same backend, measured with wrk in one run on the same
# cores (perf-anchors.md section 9's method).
#
# The backend is an nginx (1 worker, `return 200`) deployed as an init app on a real
# `basalt up`; Basalt's LB (`basalt lb --threads W`) learns it from the master's event stream,
# HAProxy and nginx are configured with the same address. Per target and round it prints
# req/s, p99 and CPU per request (utime+stime of the proxy's processes over the run), then
# the medians and Basalt's ratio to the better peer.
#
#   bash bench/lb.sh [ROUNDS=3] [WORKERS=1] [SECONDS=10] [CONNECTIONS=50]
#
# PIN=1 runs wrk on CPU 0 and every proxy on CPU 1 (the backend floats): on a 2-core machine
# the unpinned figures swing with where the scheduler puts wrk and the backend.
#
# PROFILE=1 then samples Basalt's LB under the same load with `perf record -e cpu-clock`
# (software clock: no hardware counters needed) and prints where its CPU time goes, by
# component (kernel, pingora, our proxy code, allocator, runtime, ...) and the top symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORKERS=${2:-1}
SECS=${3:-10}
CONNS=${4:-50}

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
[ -n "${BASALT_PREBUILT:-}" ] || cargo build --release -q -p basalt --bin basalt
BIN=$CARGO_TARGET_DIR/release/basalt
W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Tasks outlive `basalt up` by design: stop the backend by its sandbox.
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$W"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  rm -rf "$W"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
MASTER=$base LBP=$((base + 1)) LBS=$((base + 2)) LBA=$((base + 3)) HAP=$((base + 4)) NGX=$((base + 5)) INIT=$((base + 6))
BASALT_LOG=warn "$BIN" up --data-dir "$W/up" --master-port "$MASTER" --agent-port 0 --no-dns --no-lb --no-universe \
  --init-port "$INIT" --resources "cpus:4;mem:4096;disk:100;ports:[$((base + 100))-$((base + 200))]" \
  --ready-file "$W/up.ready" >"$W/up.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/up.ready" ] && break; sleep 0.1; done

cat >"$W/backend.conf.in" <<'EOF'
worker_processes 1; daemon off; pid @DIR@/backend.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:@PORT@; location / { return 200 "ok\n"; } } }
EOF
cat >"$W/backend.json" <<EOF
{"id": "/bench", "instances": 1, "cpus": 0.5, "mem": 64,
 "cmd": "sed -e \"s/@PORT@/\$PORT0/\" -e \"s#@DIR@#\$PWD#\" $W/backend.conf.in > nginx.conf && exec nginx -e stderr -p \$PWD -c \$PWD/nginx.conf",
 "portDefinitions": [{"port": 0}],
 "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "bench.local"},
 "healthChecks": [{"protocol": "MESOS_TCP", "portIndex": 0, "delaySeconds": 0, "intervalSeconds": 1}]}
EOF
curl -sf -XPOST "http://127.0.0.1:$INIT/v2/apps" -H 'Content-Type: application/json' -d @"$W/backend.json" >/dev/null

BASALT_LOG=warn "$BIN" lb --master "http://127.0.0.1:$MASTER" --ip 127.0.0.1 --threads "$WORKERS" \
  --lb-http-port "$LBP" --lb-stats-port "$LBS" --lb-app-id-port "$LBA" \
  --ready-file "$W/lb.ready" >"$W/lb.log" 2>&1 & pids+=($!)
LB_PID=$!
BACKEND=
for _ in $(seq 1 300); do
  BACKEND=$(curl -sf "http://127.0.0.1:$LBS/routes" | python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["service_ports"]; print(s[0]["servers"][0] if s and s[0]["servers"] else "")' 2>/dev/null || true)
  [ -n "$BACKEND" ] && break
  sleep 0.1
done
[ -n "$BACKEND" ] || { echo "the LB never learned the backend" >&2; tail -20 "$W/lb.log" "$W/up.log" >&2; exit 1; }

cat >"$W/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 4096
defaults
  mode http
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  server s1 $BACKEND
EOF
haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 & pids+=($!)
HAP_PID=$!
cat >"$W/nginx.conf" <<EOF
worker_processes $WORKERS; daemon off; pid $W/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream b { server $BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGX;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
EOF
nginx -e stderr -p "$W" -c "$W/nginx.conf" >"$W/nginx.log" 2>&1 & pids+=($!)
NGX_PID=$!
for port in "$LBP" "$HAP" "$NGX"; do
  for _ in $(seq 1 100); do curl -sf -H 'Host: bench.local' "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
done

# utime+stime (clock ticks) of a process and its children (nginx workers).
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

declare -A URL=([direct]="http://$BACKEND/" [basalt]="http://127.0.0.1:$LBP/" [haproxy]="http://127.0.0.1:$HAP/" [nginx]="http://127.0.0.1:$NGX/")
declare -A PID=([direct]="" [basalt]="$LB_PID" [haproxy]="$HAP_PID" [nginx]="$NGX_PID")
RES="$W/results"
: >"$RES"
WRK=(wrk)
if [ -n "${PIN:-}" ]; then
  for p in "$LB_PID" "$HAP_PID" "$NGX_PID" $(pgrep -P "$NGX_PID"); do taskset -apc 1 "$p" >/dev/null; done
  WRK=(taskset -c 0 wrk)
fi
echo "wrk -t1 -c$CONNS -d${SECS}s --latency, $WORKERS worker(s) per proxy, backend nginx at $BACKEND"
for r in $(seq 1 "$ROUNDS"); do
  for t in direct basalt haproxy nginx; do
    before=0
    [ -n "${PID[$t]}" ] && before=$(ticks "${PID[$t]}")
    out=$("${WRK[@]}" -t1 -c"$CONNS" -d"${SECS}s" --latency -H 'Host: bench.local' "${URL[$t]}")
    after=0
    [ -n "${PID[$t]}" ] && after=$(ticks "${PID[$t]}")
    echo "$out" | python3 -c '
import re, sys
name, rnd, dt, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), 100
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
bad = (int(errs.group(1)) if errs else 0) + (sum(map(int, sock.groups())) if sock else 0)
cpu_us = dt / hz * 1e6 / total if dt else 0.0
print(f"{name} {rnd} {rps:.0f} {p99:.3f} {cpu_us:.2f} {bad}")
' "$t" "$r" "$((after - before))" | tee -a "$RES" | awk '{printf "  round %s %-8s %8s req/s  p99 %7s ms  CPU/req %6s us  errors %s\n", $2, $1, $3, $4, $5, $6}'
  done
done
python3 - "$RES" "$WORKERS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for name in ["direct", "basalt", "haproxy", "nginx"]:
    rs = [r for r in rows if r[0] == name]
    med[name] = tuple(statistics.median(float(r[i]) for r in rs) for i in (2, 3, 4))
print(f"medians ({sys.argv[2]} worker(s)):")
for name, (rps, p99, cpu) in med.items():
    print(f"  {name:8} {rps:9.0f} req/s   p99 {p99:6.3f} ms   CPU/req {cpu:6.2f} us")
peer = max(("haproxy", "nginx"), key=lambda n: med[n][0])
ratio = med["basalt"][0] / med[peer][0]
p99r = med["basalt"][1] / med[peer][1]
print(f"basalt / {peer} (the better peer): {ratio:.2f}x req/s, p99 {p99r:.2f}x  "
      f"(gate: >= 0.75x with p99 <= 1.5x; goal 1.0x)")
EOF

if [ -n "${PROFILE:-}" ]; then
  command -v perf >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
  perf record -q -e cpu-clock -F 4000 -g -p "$LB_PID" -o "$W/perf.data" -- sleep "$SECS" 2>/dev/null &
  rec=$!
  wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Host: bench.local' "http://127.0.0.1:$LBP/" >/dev/null
  wait "$rec" || true
  perf report -i "$W/perf.data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.01 2>/dev/null \
    | python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if m:
        rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
def part(dso, kind, sym):
    if kind == "k" or dso.startswith("[kernel"):
        if any(w in sym for w in ("tcp", "sock", "inet", "ip_", "skb", "__sys_", "sendmsg", "recvmsg", "netif", "net_", "loopback", "dev_")):
            return "kernel: TCP/IP + sockets"
        if any(w in sym for w in ("epoll", "ep_", "poll")):
            return "kernel: epoll"
        return "kernel: other (syscall entry, scheduler, ...)"
    s = sym
    for key, name in (("pingora", "pingora (HTTP/1 parse + write, connector pool)"),
                      ("basalt_lb", "basalt_lb (routing, balancing, headers)"),
                      ("mi_", "mimalloc"), ("_mi_", "mimalloc"),
                      ("tokio", "tokio runtime"), ("httparse", "httparse"),
                      ("http::", "http crate (header maps)"), ("bytes", "bytes"),
                      ("memcpy", "libc memcpy/memmove"), ("memmove", "libc memcpy/memmove"),
                      ("arc_swap", "arc_swap (routing table)"), ("core::fmt", "formatting"),
                      ("alloc::", "std alloc/collections")):
        if key in s:
            return name
    if "libc" in dso:
        return "libc (syscall wrappers, ...)"
    return "other user space"
by = {}
for pct, dso, kind, sym in rows:
    by[part(dso, kind, sym)] = by.get(part(dso, kind, sym), 0.0) + pct
print("where the LB spends its CPU under load (perf cpu-clock samples):")
for k, v in sorted(by.items(), key=lambda kv: -kv[1]):
    print(f"  {v:5.1f}%  {k}")
print("top symbols:")
for pct, dso, kind, sym in sorted(rows, key=lambda r: -r[0])[:15]:
    print(f"  {pct:5.1f}%  {sym[:100]}")
'
fi
