#!/usr/bin/env bash
# Runs every test of faas: Rust unit and integration tests of the workspace (faas and the load
# generator), then the Python tests (pytest).
# Each test run starts its own redis-server(s) on free ports; nothing shared is touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/venv.sh python/requirements-test.txt
export FAAS_TEST_PYTHON="$root/.venv/bin/python"
cargo build --quiet --workspace --bins
cargo test --workspace --all-targets --no-fail-fast
"$FAAS_TEST_PYTHON" -m pytest -q tests/python python/tests
