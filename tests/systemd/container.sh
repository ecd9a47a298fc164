#!/bin/bash
# tests/systemd/container.sh: a real systemd as PID 1 of private namespaces (pid, mount, uts, ipc, net,
# cgroup), with the built faas .deb installed by dpkg -i, for tests/systemd/ (run by
# scripts/systemd-test.sh). The root is a tmpfs overlay of this machine's own /, so nothing on the
# host changes; a redis-server unit (127.0.0.1:6379 of the private network namespace) stands in for
# Redis. Needs root and the host's systemd, redis-server, util-linux (unshare, nsenter, setpriv,
# script).
#
#   container.sh up DEB...    boot (about 3 s); copies the DEBs to /var/cache/faas-test/ inside
#   container.sh exec CMD...  run CMD inside (all namespaces of the container's PID 1)
#   container.sh pid          the host pid of the container's systemd (for nsenter -t PID -n ...)
#   container.sh down         power off (bounded), kill what is left, remove everything
#
# State lives in $FAAS_SYSTEMD_DIR (default /tmp/faas-systemd-test) and in the cgroup of the same
# name; two runs with different directories do not meet. The console is in $DIR/console.log.
# Adapted from ../shared/tools/systemd-container.sh (the same boot, the package instead of copies).
set -euo pipefail
P=${FAAS_SYSTEMD_DIR:-/tmp/faas-systemd-test}
export FAAS_SYSTEMD_DIR=$P
SELF=$(readlink -f "$0")
CG=/sys/fs/cgroup/unified
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && CG=/sys/fs/cgroup
CG=$CG/$(basename "$P")
alive() { [ -n "${1:-}" ] && [ -e "/proc/$1" ]; }
pidof_file() { cat "$P/$1.pid" 2>/dev/null || true; }

case "${1:-}" in
up)
    shift
    [ $# -gt 0 ] || { echo "container.sh up: no .deb given" >&2; exit 2; }
    if alive "$(pidof_file systemd)"; then echo "container.sh: already up in $P" >&2; exit 1; fi
    rm -rf "$P"
    mkdir -p "$P/mnt" "$P/root" "$P/debs" "$CG/payload"
    cp -- "$@" "$P/debs/"
    setsid script -qfec "$SELF _outer" "$P/console.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$P/script.pid"
    # PID 1 inside is the unshare child's child; wait (bounded) until its private bus socket exists.
    S=
    for _ in $(seq 300); do
        U=$(pidof_file unshare)
        S=$(cat /proc/"$U"/task/*/children 2>/dev/null | awk '{print $1}') || true
        [ -n "$S" ] && [ -S "/proc/$S/root/run/systemd/private" ] && break
        alive "$(pidof_file script)" || { echo "container.sh: boot process exited; console:" >&2; tail -n 40 "$P/console.log" >&2; exit 1; }
        S=
        sleep 0.1
    done
    [ -n "$S" ] || { echo "container.sh: systemd did not come up within 30 s; console:" >&2; tail -n 40 "$P/console.log" >&2; exit 1; }
    echo "$S" >"$P/systemd.pid"
    # "running" or "degraded" (a host unit that cannot work in a container); both mean booted.
    state=$(timeout 60 nsenter -t "$S" -a systemctl is-system-running --wait 2>/dev/null) || true
    case "$state" in
    running) ;;
    degraded) echo "container.sh: booted degraded; failed units:"; nsenter -t "$S" -a systemctl --no-pager --failed --plain --no-legend || true ;;
    *) echo "container.sh: boot did not finish (state '$state'); console:" >&2; tail -n 40 "$P/console.log" >&2; exit 1 ;;
    esac
    ;;
_outer) # the unshare parent stays outside the container's cgroup; capabilities dropped as systemd-nspawn does
    echo $$ >"$P/unshare.pid"
    echo $$ >"$CG/cgroup.procs"
    exec unshare --pid --fork --mount --uts --ipc --net --propagation private setpriv --bounding-set \
        -sys_time,-sys_module,-sys_rawio,-sys_pacct,-wake_alarm,-block_suspend,-syslog,-mac_admin,-mac_override,-bpf,-perfmon,-checkpoint_restore,-ipc_lock,-sys_tty_config \
        "$SELF" _init
    ;;
_init) # PID 1 of the new pid namespace
    echo 0 >"$CG/payload/cgroup.procs"
    exec unshare --cgroup "$SELF" _root
    ;;
_root)
    R=$P/root E=$P/root/etc/systemd/system
    mount -t tmpfs tmpfs "$P/mnt"
    mkdir "$P/mnt/u" "$P/mnt/w"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$P/mnt/u,workdir=$P/mnt/w" "$R"
    mount -t proc proc "$R/proc"
    mount --bind "$R/proc/sys" "$R/proc/sys"
    mount -o remount,bind,ro "$R/proc/sys"
    mount -t sysfs -o ro sysfs "$R/sys"
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
    mount -t tmpfs -o mode=755 tmpfs "$R/dev"
    mkdir "$R/dev/pts" "$R/dev/shm"
    for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r d ma mi <<<"$n"
        mknod -m 666 "$R/dev/$d" c "$ma" "$mi"
    done
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
    ln -s pts/ptmx "$R/dev/ptmx"
    ln -s /proc/self/fd "$R/dev/fd"
    touch "$R/dev/console"
    mount --bind "$(tty)" "$R/dev/console"
    mount -t tmpfs tmpfs "$R/run"
    find "$E" -mindepth 2 -path '*.wants/*' -delete  # none of the host image's enabled services
    ln -s /dev/null "$E/console-getty.service"       # its vhangup would hang up the console pty
    # A container image's "never start services" policy (Docker's exit-101 policy-rc.d) would stop
    # deb-systemd-invoke in the package's maintainer scripts; a real Debian host has none.
    rm -f "$R/usr/sbin/policy-rc.d"
    printf '%s\n' '[Service]' Type=notify DynamicUser=yes TimeoutStopSec=10s \
        "ExecStart=$(command -v redis-server) --bind 127.0.0.1 --save \"\" --appendonly no --supervised systemd" \
        '[Install]' WantedBy=multi-user.target >"$E/redis-server.service"
    mkdir -p "$E/multi-user.target.wants"
    ln -s ../redis-server.service "$E/multi-user.target.wants/"
    echo faas-systemd >"$R/etc/hostname"
    # dpkg's database as of now, on its own tmpfs: a change to the host's copy while the container
    # runs (another apt-get on this machine) would otherwise surface as ESTALE through the overlay.
    mkdir "$P/mnt/dpkg"
    cp -a /var/lib/dpkg/. "$P/mnt/dpkg/"
    mount --bind "$P/mnt/dpkg" "$R/var/lib/dpkg"
    install -d "$R/var/cache/faas-test"
    cp "$P"/debs/*.deb "$R/var/cache/faas-test/"
    mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
    cd "$R"
    mkdir .oldroot
    pivot_root . .oldroot
    exec chroot . sh -c 'umount -l /.oldroot; rmdir /.oldroot; exec env -i container=other /lib/systemd/systemd --show-status=yes'
    ;;
exec)
    shift
    S=$(pidof_file systemd)
    alive "$S" || { echo "container.sh: not up" >&2; exit 1; }
    exec nsenter -t "$S" -a "$@"
    ;;
pid)
    S=$(pidof_file systemd)
    alive "$S" || { echo "container.sh: not up" >&2; exit 1; }
    echo "$S"
    ;;
down) # safe to call in any state, also after a failed or partial `up`
    S=$(pidof_file systemd)
    if alive "$S"; then
        timeout 30 nsenter -t "$S" -a systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 300); do alive "$S" || break; sleep 0.1; done
        alive "$S" && kill -KILL "$S" # init of the pid namespace: the kernel kills the rest
    fi
    U=$(pidof_file unshare)
    alive "$U" && kill -KILL "$U"
    SC=$(pidof_file script)
    for _ in $(seq 100); do alive "$SC" || break; sleep 0.1; done
    alive "$SC" && kill -KILL "$SC"
    if [ -d "$CG" ]; then
        for _ in $(seq 100); do find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null && break; sleep 0.1; done
    fi
    [ -d "$CG" ] && echo "container.sh: cgroup $CG not removed" >&2
    # The mounts lived in the container's mount namespace only; these are empty host directories.
    rm -rf "$P/mnt" "$P/root" "$P"/*.pid
    ;;
*)
    echo "usage: $0 up DEB... | exec CMD... | pid | down" >&2
    exit 2
    ;;
esac
