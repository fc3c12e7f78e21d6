#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine that has only the Rust toolchain:
# installs what the tests need, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# DNS tests ask with real dig and forward to a real dnsmasq.
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing system packages: ${need_apt[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi

# One target dir outside the checkout, shared by runs, keeps CI well inside its limit.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked --quiet
fi
cargo nextest run --workspace --no-fail-fast --profile ci
