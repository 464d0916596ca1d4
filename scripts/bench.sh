#!/usr/bin/env bash
# The benchmark suite in one command: builds the release binary users run, then runs the
# end-to-end loads (mock Kafka → `pail run --once` → S3 on loopback) against the single-core
# ceiling measured in the same run, and the stage benches.
#
#   bash scripts/bench.sh            every load: (a) 1 KB × 128 partitions, (b) ~100 B × 64,
#                                    (c) 256 partitions × 4 paths, 128 MiB targets
#   bash scripts/bench.sh b          one load
#   PAIL_BENCH_SCALE=0.25 bash scripts/bench.sh   fewer events
#   PAIL_BENCH_STAGES=1 bash scripts/bench.sh     also the stage benches (benches/pipeline.rs)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked --bin pail
PAIL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/pail" cargo bench --locked --bench suite -- "$@"
if [[ -n "${PAIL_BENCH_STAGES:-}" ]]; then
  cargo bench --locked --bench pipeline
fi
