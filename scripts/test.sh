#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine that has only the Rust toolchain:
# installs what the tests need, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# pingora (the load balancer) builds zlib-ng with cmake.
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
# The load balancer's TLS and HTTP/2 test: a self-signed certificate and a real client.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
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

# The real `marathon` Python client for init's compatibility test (PyPI 0.13.0, plus the
# collections shim it needs on Python 3.10+: ../shared/reference/real-clients.md).
VENVS="${BASALT_VENVS:-$HOME/.cache/basalt}"
if [ ! -x "$VENVS/venv-marathon/bin/python" ] || ! "$VENVS/venv-marathon/bin/python" -c 'import marathon' 2>/dev/null; then
  mkdir -p "$VENVS"
  python3 -m venv "$VENVS/venv-marathon"
  "$VENVS/venv-marathon/bin/pip" install -q "marathon==0.13.0"
fi
site=$("$VENVS/venv-marathon/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat >"$site/_py311compat.py" <<'PY'
import collections
import collections.abc
for _n in ('Mapping', 'MutableMapping', 'Sequence', 'MutableSequence', 'Iterable',
           'Callable', 'Set', 'MutableSet', 'Hashable'):
    if not hasattr(collections, _n):
        setattr(collections, _n, getattr(collections.abc, _n))
PY
echo 'import _py311compat' >"$site/_py311compat.pth"
export BASALT_MARATHON_PYTHON="$VENVS/venv-marathon/bin/python"

# The real dcos CLI (PyPI dcoscli 0.6.1) for the package universe's compatibility test: its
# pins no longer install, so its dependencies go in by hand, then dcoscli without them, and
# the same collections shim (../shared/reference/real-clients.md, section 2).
if [ ! -x "$VENVS/venv-dcoscli/bin/dcos" ] || ! "$VENVS/venv-dcoscli/bin/python" -c 'import dcoscli' 2>/dev/null; then
  python3 -m venv "$VENVS/venv-dcoscli"
  "$VENVS/venv-dcoscli/bin/pip" install -q "dcos==0.6.1" "docopt>=0.6,<1.0" "pkginfo==1.2.1" \
    "toml>=0.9,<1.0" "virtualenv>=13.0,<16.0" "cryptography==50.0.2" "sseclient==0.0.19" \
    "retrying==1.3.3" "setuptools<82"
  "$VENVS/venv-dcoscli/bin/pip" install -q --no-deps "dcoscli==0.6.1"
fi
site=$("$VENVS/venv-dcoscli/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$("$VENVS/venv-marathon/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_py311compat.py" "$site/"
echo 'import _py311compat' >"$site/_py311compat.pth"
export BASALT_DCOS_CLI="$VENVS/venv-dcoscli/bin/dcos"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked --quiet
fi
cargo nextest run --workspace --no-fail-fast --profile ci
