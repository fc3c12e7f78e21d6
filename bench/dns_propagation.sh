#!/usr/bin/env bash
# DNS propagation p50/p99: a real `basalt master` and `basalt dns`, tasks arriving on
# simulated agents (basalt/examples/dns_propagation.rs).
#   bash bench/dns_propagation.sh [TASKS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
cargo build --release -q -p basalt --bin basalt --example dns_propagation
BIN=$CARGO_TARGET_DIR/release/basalt
W=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
base=$((20000 + RANDOM % 20000))
"$BIN" master --data-dir "$W/m" --port "$base" --agent-timeout 1h --ready-file "$W/m.ready" >"$W/m.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/m.ready" ] && break; sleep 0.1; done
BASALT_LOG=warn "$BIN" dns --master "http://127.0.0.1:$base" --dns-port $((base + 1)) --dns-http-port $((base + 2)) \
  --dns-threads 1 --ready-file "$W/d.ready" >"$W/d.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/d.ready" ] && break; sleep 0.1; done
"$CARGO_TARGET_DIR/release/examples/dns_propagation" "http://127.0.0.1:$base" "127.0.0.1:$((base + 1))" "$N"
