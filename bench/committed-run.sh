#!/usr/bin/env bash
# The committed run of docs/performance.md: three rounds, each running every headline stage once
# for the build before (BEFORE_BIN_DIR), today's build with defaults (and the Python peer,
# bench/pyfaas.py), and today's build with executor.prefetch = 1 and = 64 (the largest
# accepted), alternating so that drift of a shared machine hits all four alike; then
# weak scaling (1 to 64 processes) with defaults and with prefetch 1, and perf profiles of a
# local reuse drain (prefetch 1 and 64) and a push reuse drain (defaults and prefetch 64). Writes
# docs/bench/server.json (or $OUT), throughput.png, weak_scaling_server.png and
# perf-drain-local-reuse-prefetch-{1,64}, perf-drain-push-reuse{,-prefetch-64} (.txt, .json).
# About 25 minutes; bench/doc_tables.py prints the document's tables from server.json.
# Usage: bench/committed-run.sh BEFORE_BIN_DIR
#   BEFORE_BIN_DIR: release binaries (faas-gateway, faas-dispatcher, faas-worker, faas-loadgen)
#   of the build to compare with; today's are target/release (scripts/bench-server.sh builds them).
set -euo pipefail
before=$(cd "${1:?usage: bench/committed-run.sh BEFORE_BIN_DIR}" && pwd)
cd "$(dirname "$0")"
root=$(cd .. && pwd)
export FAAS_TEST_PYTHON="$root/.venv/bin/python"
py="$root/.venv/bin/python"
out=${OUT:-$root/docs/bench}
now="$root/target/release"
rm -f "$out/server.json"
head=accept,drain-local-reuse,drain-pull-reuse,drain-push-reuse,drain-local-fork,drain-push-fork
head=$head,closed-local-reuse,closed-local-reuse-128
for round in 1 2 3; do
    echo "round $round"
    FAAS_BIN_DIR="$before" "$py" faas_serverbench.py --runs 1 --stages "$head" --tag before --append --out "$out"
    FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 1 --stages "$head,peer-accept,peer-closed" --append --out "$out"
    for p in 1 64; do
        FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 1 --stages "${head#accept,}" --prefetch $p \
            --tag "prefetch $p" --append --out "$out"
    done
done
weak=""
for m in local-reuse local-fork push-reuse; do
    for n in 1 4 16 64; do weak="$weak,weak-$m-$n"; done
done
FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 3 --stages "${weak#,}" --append --out "$out"
FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 3 --prefetch 1 --tag "prefetch 1" --append --perf \
    --stages weak-local-reuse-1,weak-local-reuse-4,weak-local-reuse-16,weak-local-reuse-64 --out "$out"
# A profile of a push reuse drain with defaults (the remote path: dispatcher, worker, guards),
# and of local and push reuse drains with prefetch 64.
FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 0 --perf --perf-stage drain-push-reuse --out "$out"
for stage in drain-local-reuse drain-push-reuse; do
    FAAS_BIN_DIR="$now" "$py" faas_serverbench.py --runs 0 --perf --perf-stage $stage --prefetch 64 \
        --tag "prefetch 64" --out "$out"
done
