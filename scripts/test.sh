#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds the binary users run, and
# runs the whole suite against it.
#
#   bash scripts/test.sh [cargo test arguments]     e.g. bash scripts/test.sh --test it regression::
#
# The child-process tests (cli, crash, shutdown, connection-test, regression, interop, ...) run
# the release binary built exactly as the README and the Dockerfile build it, through PAIL_BIN:
# `cargo test` alone would run the binary it builds itself, whose dependencies may carry
# features that only dev-dependencies switch on.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --tests
bash scripts/check-dev-features.sh
cargo build --release --locked --bin pail
PAIL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/pail" cargo test --locked "$@"
