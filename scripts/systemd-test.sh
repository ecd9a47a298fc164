#!/usr/bin/env bash
# Runs tests/systemd/ (the built .deb under a real systemd): boots systemd as PID 1 of private
# namespaces (tests/systemd/container.sh), runs the pytest cases in the container's network
# namespace, saves the container's journal and console to target/systemd-test/, and always powers
# the container off. Skips (exit 0, with the reason) only where such a systemd cannot be booted:
# not root, no systemd installed, or no namespaces allowed. Run by .ci/run after `cargo deb`.
# Usage: scripts/systemd-test.sh [path/to/faas_*.deb] [pytest args, e.g. -k watchdog]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deb=
if [ $# -gt 0 ] && [[ $1 == *.deb ]]; then deb=$1; shift; fi
deb=${deb:-$(ls -t target/debian/faas_*.deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "systemd-test: no .deb given or found in target/debian (run cargo deb)" >&2; exit 1; }

skip() { echo "systemd-test: SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root (booting systemd as PID 1 of new namespaces needs root; CI runs as root)"
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd on this machine (apt-get install systemd)"
unshare --pid --fork --mount --net --uts --ipc --cgroup true 2>/dev/null ||
    skip "this machine does not allow new pid/mount/net/cgroup namespaces"
for tool in nsenter setpriv script redis-server; do
    command -v "$tool" >/dev/null || { echo "systemd-test: $tool is missing" >&2; exit 1; }
done

out=$root/target/systemd-test
rm -rf "$out"
mkdir -p "$out/debs"
debs=("$deb")
# Debian's python3-dill (the package's dependency) comes from the host when installed there; the
# container's root is an overlay of the host's, so only a missing one needs its .deb.
if ! dpkg -s python3-dill >/dev/null 2>&1; then
    (cd "$out/debs" && apt-get download python3-dill >/dev/null)
    debs+=("$out"/debs/python3-dill_*.deb)
fi
scripts/venv.sh python/requirements-test.txt

export FAAS_SYSTEMD_DIR=${FAAS_SYSTEMD_DIR:-/tmp/faas-systemd-test-$$}
container=$root/tests/systemd/container.sh
finish() {
    if [ -n "$(cat "$FAAS_SYSTEMD_DIR/systemd.pid" 2>/dev/null)" ]; then
        timeout 60 "$container" exec journalctl --no-pager -o short-precise >"$out/journal.txt" 2>&1 || true
    fi
    cp "$FAAS_SYSTEMD_DIR/console.log" "$out/console.log" 2>/dev/null || true
    "$container" down || true
    rm -rf "$FAAS_SYSTEMD_DIR"
}
trap finish EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
"$container" up "${debs[@]}"
pid=$("$container" pid)
echo "systemd-test: systemd booted in $(($(date +%s) - started)) s (pid $pid); package $(basename "$deb")"
status=0
nsenter -t "$pid" -n env FAAS_SYSTEMD_PID="$pid" "$root/.venv/bin/python" -m pytest -v -rP -p no:cacheprovider \
    --durations=5 tests/systemd "$@" || status=$?
echo "systemd-test: $(($(date +%s) - started)) s in all; journal and console in $out"
exit "$status"
