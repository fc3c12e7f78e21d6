#!/usr/bin/env bash
# LB propagation p50/p99: a real `basalt master` and `basalt lb`, instances reported healthy
# and then TASK_KILLING by a simulated agent, under continuous load
# (basalt/examples/lb_propagation.rs).
#   bash bench/lb_propagation.sh [ROUNDS=100]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
command -v cmake >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
# BASALT_PREBUILT=1 skips the build (use the release binaries already in the target dir).
[ -n "${BASALT_PREBUILT:-}" ] || cargo build --release -q -p basalt --bin basalt --example lb_propagation
BIN=$CARGO_TARGET_DIR/release/basalt
W=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
base=$((20000 + RANDOM % 20000))
"$BIN" master --data-dir "$W/m" --port "$base" --agent-timeout 1h --agent-reregister-timeout 1h --ready-file "$W/m.ready" >"$W/m.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/m.ready" ] && break; sleep 0.1; done
BASALT_LOG=warn "$BIN" lb --master "http://127.0.0.1:$base" --ip 127.0.0.1 --threads 1 \
  --lb-http-port $((base + 1)) --lb-stats-port $((base + 2)) --lb-app-id-port $((base + 3)) \
  --ready-file "$W/l.ready" >"$W/l.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ -s "$W/l.ready" ] && break; sleep 0.1; done
"$CARGO_TARGET_DIR/release/examples/lb_propagation" "http://127.0.0.1:$base" "http://127.0.0.1:$((base + 1))" "$N"
