#!/usr/bin/env bash
# Launch throughput: starts `basalt up` on a scratch data dir and free ports, runs
# 1,000 short tasks through it (basalt/examples/launch.rs) and prints the rate beside the
# machine's raw fork+exec rate measured in the same run. Runs it ROUNDS times (default 3)
# and prints the median.
#   bash bench/launch.sh [TASKS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-1000}
ROUNDS=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}
cargo build --release -q -p basalt --bin basalt --example launch
BIN=$CARGO_TARGET_DIR/release/basalt
EX=$CARGO_TARGET_DIR/release/examples/launch

rates=()
# Data dirs are removed after the last round, not between rounds: on ext4 without a journal
# the allocator skips inodes freed in the last 5-35 s, so deleting one round's 1,000
# sandboxes would slow the next round's launches (measured: each round slower than the last).
dirs=()
trap 'rm -rf "${dirs[@]}"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  dir=$(mktemp -d)
  dirs+=("$dir")
  mport=$((20000 + RANDOM % 20000)); aport=$((mport + 1))
  "$BIN" up --data-dir "$dir" --master-port "$mport" --agent-port "$aport" \
    --no-dns --no-init --no-universe --ready-file "$dir/ready.json" >"$dir/up.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; rm -rf "${dirs[@]}"' EXIT
  for _ in $(seq 1 200); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
  [ -s "$dir/ready.json" ] || { cat "$dir/up.log"; echo "basalt up did not start" >&2; exit 1; }
  line=$("$EX" "http://127.0.0.1:$mport" "$TASKS")
  echo "round $round: $line"
  rates+=("$(sed -E 's/.*= ([0-9]+) tasks\/s \(([0-9]+)%.*/\1 \2/' <<<"$line")")
  kill -INT $pid; wait $pid || true
done
printf '%s\n' "${rates[@]}" | sort -n | awk -v n="$ROUNDS" '{r[NR]=$1; p[NR]=$2} END {m=int((n+1)/2); printf "median: %d tasks/s, %d%% of the raw fork+exec rate\n", r[m], p[m]}'
