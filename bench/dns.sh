#!/usr/bin/env bash
# DNS throughput: basalt's DNS against NSD (response-rate limiting off) and unbound, all
# serving the same records for TASKS running tasks, same number of server threads, asked
# by dnsperf in one run. The master is a real `basalt master`; its agents are simulated
# (bench/fake_agents.py) so 10,000 tasks need no 10,000 processes.
#   bash bench/dns.sh [TASKS=10000] [THREADS=1] [SECONDS=10] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-10000}; THREADS=${2:-1}; SECS=${3:-10}; ROUNDS=${4:-3}

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v nsd >/dev/null || need+=(nsd)
command -v unbound >/dev/null || need+=(unbound)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
cargo build --release -q -p basalt --bin basalt
BIN=$CARGO_TARGET_DIR/release/basalt

W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
MPORT=$base; BPORT=$((base + 1)); HPORT=$((base + 2)); NPORT=$((base + 3)); UPORT=$((base + 4))

"$BIN" master --data-dir "$W/master" --port "$MPORT" --agent-timeout 1h --ready-file "$W/m.ready" \
  >"$W/master.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/m.ready" ] && break; sleep 0.1; done
python3 bench/fake_agents.py "http://127.0.0.1:$MPORT" "$TASKS"
BASALT_LOG=warn "$BIN" dns --master "http://127.0.0.1:$MPORT" --dns-port "$BPORT" --dns-http-port "$HPORT" \
  --dns-threads "$THREADS" --ready-file "$W/d.ready" >"$W/dns.log" 2>&1 & BASALT_PID=$!; pids+=($BASALT_PID)
for _ in $(seq 1 100); do [ -s "$W/d.ready" ] && break; sleep 0.1; done
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$HPORT/v1/axfr" >"$W/axfr.json"
  python3 -c "import json,sys; d=json.load(open('$W/axfr.json')); sys.exit(0 if sum(len(v) for v in d['Records']['SRVs'].values()) >= $TASKS else 1)" && break
  sleep 0.2
done
python3 bench/dns_zone.py "$W/axfr.json" "$W"

cat >"$W/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1
  port: $NPORT
  server-count: $THREADS
  rrl-ratelimit: 0
  username: ""
  chroot: ""
  zonesdir: "$W"
  database: ""
  pidfile: "$W/nsd.pid"
  xfrdfile: "$W/xfrd.state"
  zonelistfile: "$W/zone.list"
  xfrdir: "$W"
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: mesos
  zonefile: "$W/mesos.zone"
CONF
nsd -d -c "$W/nsd.conf" >"$W/nsd.log" 2>&1 & NSD_PID=$!; pids+=($NSD_PID)

cat >"$W/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: $UPORT
  num-threads: $THREADS
  so-reuseport: yes
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$W"
  pidfile: "$W/unbound.pid"
  use-syslog: no
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  include: "$W/unbound-local.conf"
remote-control:
  control-enable: no
CONF
unbound -d -c "$W/unbound.conf" >"$W/unbound.log" 2>&1 & UNBOUND_PID=$!; pids+=($UNBOUND_PID)

name=$(head -1 "$W/queries.txt" | cut -d' ' -f1)
for port in $BPORT $NPORT $UPORT; do
  for _ in $(seq 1 50); do dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 "$name" A | grep -q . && break; sleep 0.2; done
done

# A process and all its descendants (NSD serves from forked processes).
tree() { local c; echo "$1"; for c in $(pgrep -P "$1" || true); do tree "$c"; done; }
# CPU ticks of a server's whole process tree.
ticks() {
  local t=0 p
  for p in $(tree "$1"); do
    # Fields after "pid (comm) ": comm may hold spaces ("nsd: server 1").
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo $t
}
run() { # name pid port -> "qps lost avg_latency_ms cpu_us_per_query"
  local pid=$2 port=$3 before after out
  before=$(ticks "$pid")
  out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -c 20 -q 200 -T 1 -l "$SECS" 2>&1)
  after=$(ticks "$pid")
  local qps lost lat done_q
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  lat=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
  done_q=$(awk '/Queries completed/ {print $3}' <<<"$out")
  awk -v q="$qps" -v l="$lost" -v a="$lat" -v t=$((after - before)) -v n="$done_q" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %d %.3f %.2f\n", q, l, a, (n > 0 ? t / hz * 1e6 / n : 0) }'
}

echo "zone: $TASKS tasks, $(wc -l <"$W/queries.txt") query names; $THREADS server thread(s); dnsperf -c 20 -q 200 -T 1 -l $SECS"
declare -A results
for r in $(seq 1 "$ROUNDS"); do
  for s in basalt nsd unbound; do
    case $s in
      basalt) line=$(run basalt $BASALT_PID $BPORT) ;;
      nsd) line=$(run nsd $NSD_PID $NPORT) ;;
      unbound) line=$(run unbound $UNBOUND_PID $UPORT) ;;
    esac
    echo "round $r $s: qps lost avg_ms cpu_us/query = $line"
    results[$s]+="$line"$'\n'
  done
done
median() { sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
nsd_qps=$(printf '%s' "${results[nsd]}" | awk '{print $1}' | median)
for s in basalt nsd unbound; do
  q=$(printf '%s' "${results[$s]}" | awk '{print $1}' | median)
  lost=$(printf '%s' "${results[$s]}" | awk '{s+=$2} END {print s}')
  cpu=$(printf '%s' "${results[$s]}" | awk '{print $4}' | median)
  lat=$(printf '%s' "${results[$s]}" | awk '{print $3}' | median)
  awk -v s="$s" -v q="$q" -v n="$nsd_qps" -v l="$lost" -v c="$cpu" -v a="$lat" \
    'BEGIN { printf "median %-8s %8.0f qps  %.2fx NSD  lost %d  avg %.3f ms  %.2f us CPU/query\n", s, q, q / n, l, a, c }'
done
