#!/usr/bin/env bash
# Server throughput benchmark (docs/performance.md, "Server throughput"): builds the release
# binaries and faas-loadgen, then runs bench/faas_serverbench.py, which starts real deployments
# and drives them with the load generator. Writes docs/bench/server.json (every run's report,
# the machine yardstick and the medians) unless --out says otherwise.
# Usage: scripts/bench-server.sh [--runs N] [--stages a,b] [--quick] [--perf] [--out DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/venv.sh python/requirements-test.txt
cargo build --quiet --release --workspace --bins
cd bench
FAAS_BIN_DIR="$root/target/release" FAAS_TEST_PYTHON="$root/.venv/bin/python" \
    exec "$root/.venv/bin/python" faas_serverbench.py "$@"
