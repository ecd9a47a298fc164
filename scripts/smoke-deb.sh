#!/usr/bin/env bash
# Runs the daemons of a built faas .deb, unpacked into a throwaway directory, as the package would
# on a host: executors use Debian's /usr/bin/python3 with python3-dill (the package's
# dependencies), a private redis-server stands in for Redis, and a gateway, a push-mode dispatcher
# and a push worker run one task end to end through the packaged Python client. Clients use the
# project's .venv (pip's dill), so this also checks that Debian's dill loads their pickles.
# The worker's executors run as user nobody (the package's faas-exec does not exist here), so the
# switch of user happens as on an installed host (the script runs as root in CI).
# systemd is not involved (the units are checked by scripts/verify-units.sh).
# Usage: scripts/smoke-deb.sh [path/to/faas_*.deb]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deb=${1:-$(ls -t target/debian/faas_*.deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "smoke-deb: no .deb given or found in target/debian" >&2; exit 1; }
/usr/bin/python3 -c 'import dill' 2>/dev/null ||
    { echo "smoke-deb: /usr/bin/python3 has no dill (apt-get install python3-dill)" >&2; exit 1; }
scripts/venv.sh python/requirements-test.txt

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
dpkg-deb -x "$deb" "$tmp/root"
bin="$tmp/root/usr/bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() { for _ in $(seq 150); do reachable 127.0.0.1 "$1" && return 0; sleep 0.1; done; echo "smoke-deb: nothing on port $1" >&2; return 1; }

rport=$(free_port); hport=$(free_port); zport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" --logfile "$tmp/redis.log" &
pids+=($!)
wait_port "$rport"
redis=redis://127.0.0.1:$rport
# No NOTIFY_SOCKET here: the daemons run as under a plain shell. Logs go to one file.
unset NOTIFY_SOCKET
"$bin/faas-gateway" --listen "127.0.0.1:$hport" --redis "$redis" >>"$tmp/daemons.log" 2>&1 &
pids+=($!)
"$bin/faas-dispatcher" -m push -p "$zport" --redis "$redis" --python /usr/bin/python3 --name smoke-push >>"$tmp/daemons.log" 2>&1 &
pids+=($!)
wait_port "$zport"
exec_user=nobody
[ "$(id -u)" -eq 0 ] || exec_user=""   # not root: executors keep this user (the worker says so)
FAAS_WORKER_EXECUTOR__USER=$exec_user \
    "$bin/faas-worker" push 2 "tcp://127.0.0.1:$zport" --python /usr/bin/python3 --id smoke-worker >>"$tmp/daemons.log" 2>&1 &
pids+=($!)
wait_port "$hport"

ok=0
timeout 60 "$root/.venv/bin/python" - "http://127.0.0.1:$hport" "$tmp/root/usr/share/doc/faas/examples" <<'EOF' || ok=$?
import sys
sys.path.insert(0, sys.argv[2])
from faas_client import Client

c = Client(sys.argv[1])
def scaled(k):
    def f(x, *, y=1):
        import math
        return math.isqrt(x) * k + y
    return f
checks = [
    (c.register(lambda x: x * 2, name="double"), (21,), {}, ("COMPLETED", 42)),
    (c.register(scaled(10), name="closure"), (16,), {"y": 2}, ("COMPLETED", 42)),
]
for fid, args, kwargs, want in checks:
    got = c.wait(c.execute(fid, *args, **kwargs), timeout=30)
    assert got == want, (got, want)
status, exc = c.wait(c.execute(c.register(lambda: 1 / 0, name="boom")), timeout=30)
assert status == "FAILED" and isinstance(exc, ZeroDivisionError), (status, exc)
import os
who = c.wait(c.execute(c.register(lambda: __import__("os").getuid(), name="whoami")), timeout=30)
assert who[0] == "COMPLETED" and (who[1] != 0 or os.getuid() != 0), ("executors must not run as root", who)
print("smoke-deb: packaged gateway + dispatcher@push + worker@push ran 3 tasks on Debian's python3-dill")
EOF
if [ "$ok" -ne 0 ]; then
    echo "smoke-deb: FAILED; daemon logs:" >&2
    tail -n 50 "$tmp/daemons.log" >&2
    exit 1
fi
