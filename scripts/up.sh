#!/usr/bin/env bash
# Starts a working single-node cluster on a fresh Debian machine that has only the Rust
# toolchain: installs the one build dependency (cmake, for pingora's zlib-ng), builds the
# release binary and runs `basalt up` with any extra arguments passed here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake gcc
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake gcc
  fi
fi
exec cargo run --release -p basalt -- up "$@"
