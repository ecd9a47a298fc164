#!/usr/bin/env bash
# Brings up a local faas stack in the foreground: faas-gateway + faas-dispatcher (local mode),
# plus a private redis-server when no Redis is configured or reachable. Ctrl-C stops everything.
# The private redis-server keeps an append-only file in run/redis/ (fsync every second), so a
# restart of it (or of the stack) loses no accepted task; delete run/redis/ to start empty.
#
# Environment (all optional):
#   FAAS_REDIS    Redis URL to use (default: redis://127.0.0.1:6379 if it answers, else a private one)
#   FAAS_LISTEN   gateway address (default 127.0.0.1:8000)
#   FAAS_WORKERS  executor processes of the local dispatcher (default: number of CPUs)
#   FAAS_PROFILE  cargo profile to build, release (default) or dev
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
listen=${FAAS_LISTEN:-127.0.0.1:8000}
workers=${FAAS_WORKERS:-$(nproc)}
profile=${FAAS_PROFILE:-release}
rundir="$root/run"
mkdir -p "$rundir"

echo "faas: preparing the Python environment (.venv)" >&2
scripts/venv.sh python/requirements.txt
echo "faas: building ($profile)" >&2
cargo build --quiet --profile "$profile" --bins
bindir="$root/target/$([ "$profile" = dev ] && echo debug || echo "$profile")"

pids=()
cleanup() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Is something listening on host:port? (bash's /dev/tcp; no redis-cli needed)
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

redis=${FAAS_REDIS:-}
if [ -z "$redis" ] && reachable 127.0.0.1 6379; then
    redis=redis://127.0.0.1:6379
fi
if [ -z "$redis" ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$rundir/redis"
    echo "faas: no Redis reachable; starting a private redis-server on port $port (data in $rundir/redis)" >&2
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
        --dir "$rundir/redis" --logfile "$rundir/redis.log" &
    pids+=($!)
    for _ in $(seq 50); do reachable 127.0.0.1 "$port" && break; sleep 0.1; done
    redis=redis://127.0.0.1:$port
fi

"$bindir/faas-gateway" --listen "$listen" --redis "$redis" &
pids+=($!)
# Executors run as your own user here (the project's .venv need not be readable by another
# user); an installed faas runs them as the faas-exec user (see "Security model" in
# docs/operations.md).
FAAS_DISPATCHER_EXECUTOR__USER="" \
    "$bindir/faas-dispatcher" -m local -w "$workers" --redis "$redis" --python "$root/.venv/bin/python" &
pids+=($!)

host=${listen%:*}; port=${listen##*:}
for _ in $(seq 100); do reachable "$host" "$port" && break; sleep 0.1; done
echo "faas: up at http://$listen (redis $redis, $workers local executor processes); Ctrl-C to stop" >&2
wait -n "${pids[@]}"
echo "faas: a component exited; stopping the stack" >&2
exit 1
