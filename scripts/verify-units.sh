#!/usr/bin/env bash
# Checks the systemd units and sysusers file in packaging/ with systemd's own tools:
#   - `systemd-analyze verify` on every unit (templates as their real instances), with ExecStart=
#     pointed at the built binaries (verify refuses a missing executable). ANY line it prints about
#     our units (unknown key, bad value, missing binary, ...) fails the check: verify itself exits 0
#     on most of these.
#   - Documentation=man: pages are looked up in man/ when the generated pages are there
#     (otherwise --man=no and a note).
#   - `systemd-sysusers --root=TMP` creates the faas and faas-exec users from
#     packaging/sysusers.d/faas.conf in a throwaway root.
#   - `systemd-analyze security --offline=yes` prints each unit's exposure score (informational).
# Usage: scripts/verify-units.sh [BIN_DIR]   (default target/debug; build first: cargo build --bins)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin_dir=$(cd "${1:-target/debug}" 2>/dev/null && pwd) || { echo "verify-units: no binary dir ${1:-target/debug} (run cargo build --bins)" >&2; exit 1; }
for b in faas-gateway faas-dispatcher faas-worker; do
    [ -x "$bin_dir/$b" ] || { echo "verify-units: $bin_dir/$b missing (run cargo build --bins)" >&2; exit 1; }
done
command -v systemd-analyze >/dev/null || { echo "verify-units: systemd-analyze not found (apt-get install systemd)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/units"
for f in packaging/systemd/*; do
    sed "s#/usr/bin/#$bin_dir/#g" "$f" >"$tmp/units/$(basename "$f")"
done

# Instances that the documentation tells operators to use; the templates are checked through them.
units=(faas.target faas-gateway.service
       faas-dispatcher@local.service faas-dispatcher@pull.service faas-dispatcher@push.service
       faas-worker@pull.service faas-worker@push.service)
paths=()
for u in "${units[@]}"; do paths+=("$tmp/units/$u"); done

man_opt=--man=no
pages=(man/faas-gateway.8 man/faas-dispatcher.8 man/faas-worker.8 man/faas.toml.5)
if command -v man >/dev/null && ls "${pages[@]}" >/dev/null 2>&1; then
    mkdir -p "$tmp/man/man8" "$tmp/man/man5"
    cp man/*.8 "$tmp/man/man8/"
    cp man/*.5 "$tmp/man/man5/"
    export MANPATH="$tmp/man"
    man_opt=--man=yes
else
    echo "verify-units: note: man pages not found in man/ (or no man command); Documentation=man: not checked"
fi

status=0
out=$(systemd-analyze verify "$man_opt" "${paths[@]}" 2>&1) || status=$?
# Lines about units other than ours (e.g. a broken unit elsewhere on this host) are not ours to fix.
ours=$(printf '%s\n' "$out" | grep -E "faas|$tmp" || true)
if [ "$status" -ne 0 ] || [ -n "$ours" ]; then
    echo "verify-units: systemd-analyze verify failed (exit $status):" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
echo "verify-units: systemd-analyze verify: ${#units[@]} units clean ($man_opt)"

# sysusers: parse and apply in a throwaway root, then check the result.
mkdir -p "$tmp/root/etc"
sysout=$(systemd-sysusers --root="$tmp/root" "$root/packaging/sysusers.d/faas.conf" 2>&1) ||
    { echo "verify-units: systemd-sysusers failed: $sysout" >&2; exit 1; }
grep -q '^faas:x:[0-9]*:[0-9]*:[^:]*:/var/lib/faas:/usr/sbin/nologin$' "$tmp/root/etc/passwd" ||
    { echo "verify-units: sysusers did not create the faas user as expected:" >&2; cat "$tmp/root/etc/passwd" >&2; exit 1; }
grep -q '^faas:' "$tmp/root/etc/group" || { echo "verify-units: no faas group" >&2; exit 1; }
grep -q '^faas-exec:x:[0-9]*:[0-9]*:[^:]*:/nonexistent:/usr/sbin/nologin$' "$tmp/root/etc/passwd" ||
    { echo "verify-units: sysusers did not create the faas-exec user as expected:" >&2; cat "$tmp/root/etc/passwd" >&2; exit 1; }
# The executor user must not be in the daemons' group (it would read /etc/faas).
! grep -qE '^faas:[^:]*:[0-9]*:.*faas-exec' "$tmp/root/etc/group" || { echo "verify-units: faas-exec is in group faas" >&2; exit 1; }
echo "verify-units: systemd-sysusers: faas and faas-exec users and groups created in a throwaway root"

# Exposure scores (lower is better; informational, never fails).
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    for u in faas-gateway.service faas-dispatcher@push.service faas-worker@push.service; do
        systemd-analyze security --offline=yes --no-pager "$tmp/units/$u" 2>/dev/null | tail -n 1 || true
    done
fi
