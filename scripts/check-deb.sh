#!/usr/bin/env bash
# Checks a built faas .deb (cargo deb): its file list against an explicit expected list, its
# control fields (Depends, Recommends), its conffiles and maintainer scripts; then unpacks it into a
# throwaway directory and runs the packaged binaries' --version and --help.
# Usage: scripts/check-deb.sh [path/to/faas_*.deb]   (default: the newest target/debian/faas_*.deb)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deb=${1:-$(ls -t target/debian/faas_*.deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "check-deb: no .deb given or found in target/debian (run cargo deb)" >&2; exit 1; }
echo "check-deb: $deb ($(du -h "$deb" | cut -f1))"

fail=0
bad() { echo "check-deb: FAIL: $*" >&2; fail=1; }

# --- Files. Directories are not listed; every file the package must contain is. ---
expected=(
    ./usr/bin/faas-gateway
    ./usr/bin/faas-dispatcher
    ./usr/bin/faas-worker
    ./usr/lib/systemd/system/faas-gateway.service
    ./usr/lib/systemd/system/faas-dispatcher@.service
    ./usr/lib/systemd/system/faas-worker@.service
    ./usr/lib/systemd/system/faas.target
    ./usr/lib/sysusers.d/faas.conf
    ./etc/faas/gateway.toml
    ./etc/faas/dispatcher.toml
    ./etc/faas/worker.toml
    ./etc/default/faas
    ./usr/share/man/man8/faas-gateway.8.gz
    ./usr/share/man/man8/faas-dispatcher.8.gz
    ./usr/share/man/man8/faas-worker.8.gz
    ./usr/share/man/man5/faas.toml.5.gz
    ./usr/share/doc/faas/README.md
    ./usr/share/doc/faas/CHANGELOG.md
    ./usr/share/doc/faas/operations.md
    ./usr/share/doc/faas/architecture.md
    ./usr/share/doc/faas/copyright
    ./usr/share/doc/faas/examples/faas_client/__init__.py
    ./usr/share/doc/faas/examples/faas_client/client.py
    ./usr/share/doc/faas/examples/faas_client/executor.py
    ./usr/share/doc/faas/examples/faas_client/py.typed
)
listing=$(dpkg-deb -c "$deb")
files=$(printf '%s\n' "$listing" | awk '$1 !~ /^d/ {print $6}' | sort)
for f in "${expected[@]}"; do
    grep -qxF -- "$f" <<<"$files" || bad "missing $f"
done
# Executables and their modes.
for b in faas-gateway faas-dispatcher faas-worker; do
    printf '%s\n' "$listing" | grep -qE "^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/$b$" || bad "/usr/bin/$b is not -rwxr-xr-x root/root"
done
# Secrets may live in /etc/default/faas: only root reads it (systemd does, for the units).
printf '%s\n' "$listing" | grep -qE "^-rw------- (root/root|0/0) .* \./etc/default/faas$" || bad "/etc/default/faas is not -rw------- root/root"
# Nothing outside the places a Debian package may write to.
unexpected=$(grep -vE '^\./(usr/bin|usr/lib/systemd/system|usr/lib/sysusers\.d|usr/lib/tmpfiles\.d|etc/faas|etc/default|usr/share/(man|doc)/)' <<<"$files" || true)
[ -z "$unexpected" ] || bad "unexpected files: $unexpected"
echo "check-deb: $(wc -l <<<"$files") files, ${#expected[@]} expected ones present"

# --- Control fields. ---
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = faas ] || bad "Package is $(field Package)"
depends=$(field Depends)
for d in python3 python3-dill 'systemd | systemd-standalone-sysusers' libc6; do
    grep -qF -- "$d" <<<"$depends" || bad "Depends lacks $d: $depends"
done
grep -qF redis-server <<<"$(field Recommends)" || bad "Recommends lacks redis-server"
echo "check-deb: Depends: $depends; Recommends: $(field Recommends)"

# --- Conffiles: every shipped /etc file, nothing else. ---
conffiles=$(dpkg-deb --info "$deb" conffiles 2>/dev/null | sort)
want_conf=$(printf '%s\n' /etc/default/faas /etc/faas/dispatcher.toml /etc/faas/gateway.toml /etc/faas/worker.toml | sort)
[ "$conffiles" = "$want_conf" ] || bad "conffiles are [$conffiles], want [$want_conf]"
echo "check-deb: conffiles: $(tr '\n' ' ' <<<"$conffiles")"

# --- Maintainer scripts: the sysusers call, no enabling/starting on install, no restart on upgrade. ---
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp/control"
for s in postinst prerm postrm; do
    [ -x "$tmp/control/$s" ] || { bad "no executable $s"; continue; }
    sh -n "$tmp/control/$s" || bad "$s: shell syntax error"
    ! grep -q '#DEBHELPER#' "$tmp/control/$s" || bad "$s still contains the #DEBHELPER# token"
done
grep -q 'systemd-sysusers .*faas\.conf' "$tmp/control/postinst" || bad "postinst does not run systemd-sysusers faas.conf"
grep -q 'chown root:faas /etc/faas' "$tmp/control/postinst" && grep -q 'chmod 0750 /etc/faas' "$tmp/control/postinst" ||
    bad "postinst does not close /etc/faas to users other than root and faas"
for u in faas-gateway.service faas.target; do
    # The "don't enable" fragment: re-creates links only for units the admin had enabled.
    grep -q "deb-systemd-helper debian-installed $u" "$tmp/control/postinst" || bad "postinst does not record $u (without enabling it)"
done
! grep -qE 'Enables the unit on first installation|deb-systemd-invoke (start|restart|try-restart)' "$tmp/control/postinst" ||
    bad "postinst enables, starts or restarts units"
grep -q 'deb-systemd-invoke stop faas-gateway.service faas.target' "$tmp/control/prerm" || bad "prerm does not stop the units on removal"
grep -q 'rm -rf /var/lib/faas' "$tmp/control/postrm" || bad "postrm does not remove /var/lib/faas on purge"
grep -q 'wants/faas-worker@\*\.service' "$tmp/control/postrm" || bad "postrm leaves enabled instances' links on purge"

# --- Unpacked binaries run. ---
dpkg-deb -x "$deb" "$tmp/root"
for b in faas-gateway faas-dispatcher faas-worker; do
    v=$("$tmp/root/usr/bin/$b" --version) || { bad "$b --version failed"; continue; }
    echo "check-deb: $v"
    [ "$v" = "$b $(field Version | sed 's/-[^-]*$//')" ] || bad "$b --version says '$v', package version is $(field Version)"
    "$tmp/root/usr/bin/$b" --help >/dev/null || bad "$b --help failed"
done
# Stripped binaries; their debug info is in the -dbgsym .ddeb next to the .deb.
for b in faas-gateway faas-dispatcher faas-worker; do
    ! readelf -W -S "$tmp/root/usr/bin/$b" | grep -qE '\.debug_(info|line) ' || bad "/usr/bin/$b is not stripped"
done
ddeb=$(ls "$(dirname "$deb")"/faas-dbgsym_"$(field Version)"_*.ddeb 2>/dev/null | head -n 1)
if [ -n "$ddeb" ]; then
    n=$(dpkg-deb -c "$ddeb" | grep -c '/usr/lib/debug/.build-id/.*\.debug$' || true)
    [ "$n" -ge 3 ] || bad "$ddeb has $n debug files, want 3"
    echo "check-deb: debug symbols: $ddeb ($(du -h "$ddeb" | cut -f1), $n files)"
else
    bad "no faas-dbgsym .ddeb beside $deb"
fi
# The unit files in the package are the ones in the tree.
for u in faas-gateway.service faas-dispatcher@.service faas-worker@.service faas.target; do
    cmp -s "$tmp/root/usr/lib/systemd/system/$u" "packaging/systemd/$u" || bad "packaged $u differs from packaging/systemd/$u"
done

if [ "$fail" -ne 0 ]; then
    echo "check-deb: $deb has problems (see above)" >&2
    exit 1
fi
echo "check-deb: OK"
