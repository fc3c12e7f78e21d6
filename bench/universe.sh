#!/usr/bin/env bash
# Package universe figures:
#  1. `basalt package install hello-world --yes` on `basalt up`, from the command to a
#     healthy service (the CLI returns only then): seconds, median of ROUNDS installs
#     (each followed by an uninstall). DC/OS published no figure; its users reported
#     minutes and raised CLI timeouts from 5 s to 3 min (perf-anchors.md section 5).
#  2. Verifying a signed index of PACKAGES packages on first contact, against the raw
#     ed25519 verify and sha256 throughput of this machine in the same run
#     (basalt/examples/universe_verify.rs).
#   bash bench/universe.sh [ROUNDS=5] [PACKAGES=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PACKAGES=${2:-10000}
command -v cmake >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
# BASALT_PREBUILT=1 skips the build (use the release binaries already in the target dir).
[ -n "${BASALT_PREBUILT:-}" ] || cargo build --release -q -p basalt --bin basalt --example universe_verify
BIN=$CARGO_TARGET_DIR/release/basalt
W=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  # Tasks outlive `basalt up` by design: end the ones started from this data dir.
  pkill -f "$W/" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
INIT=$((base + 2)); UNI=$((base + 3))
BASALT_LOG=warn "$BIN" up --data-dir "$W/up" --master-port "$base" --agent-port $((base + 1)) \
  --init-port "$INIT" --universe-port "$UNI" --no-dns --no-lb \
  --resources "cpus:4;mem:4096;disk:100;ports:[$((base + 100))-$((base + 200))]" \
  --ready-file "$W/up.ready" >"$W/up.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do [ -s "$W/up.ready" ] && break; sleep 0.1; done
[ -s "$W/up.ready" ] || { cat "$W/up.log"; echo "basalt up did not start" >&2; exit 1; }
export BASALT_UNIVERSE_URL=http://127.0.0.1:$UNI BASALT_INIT_URL=http://127.0.0.1:$INIT
times=()
for i in $(seq 1 "$ROUNDS"); do
  s=$(date +%s.%N)
  "$BIN" package install hello-world --yes >/dev/null 2>"$W/install.err" || { cat "$W/install.err"; exit 1; }
  e=$(date +%s.%N)
  times+=("$(awk -v a="$s" -v b="$e" 'BEGIN {print b - a}')")
  "$BIN" package uninstall hello-world >/dev/null
  for _ in $(seq 1 100); do
    curl -sf "$BASALT_INIT_URL/v2/apps/hello-world" >/dev/null || break
    sleep 0.1
  done
done
med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf 'install hello-world --yes to healthy: median %.2f s of %d (all: %s); goal < 3 s; DC/OS: minutes\n' \
  "$med" "$ROUNDS" "$(printf '%.2f ' "${times[@]}")"
"$CARGO_TARGET_DIR/release/examples/universe_verify" "$PACKAGES" 7
