"""The faas Debian package under a real systemd, used the way an operator uses it.

scripts/systemd-test.sh boots systemd as PID 1 of private namespaces (tests/systemd/container.sh),
then runs this module inside the container's network namespace: the gateway is
http://127.0.0.1:8000 and tasks go in over HTTP with the project's client (dill 0.4 in .venv;
the executors use Debian's python3-dill). Cases run in file order in one container: the package is
installed once (`package`), configured once (`deployment`), and each case first brings the units
into the state it needs (`use`), so one failing case does not decide the next one's outcome.
The last case removes and purges the package.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import tomllib
import uuid
from typing import Any, Callable, Dict, List

import pytest
import requests

from machine import Container, wait_until
from faas_client import Client

URL = "http://127.0.0.1:8000"
GATEWAY = "faas-gateway.service"


def dispatcher(mode: str) -> str:
    return f"faas-dispatcher@{mode}.service"


def worker(mode: str) -> str:
    return f"faas-worker@{mode}.service"


# What each mode needs running. The pull dispatcher listens on 5556 (a unit drop-in, as
# docs/operations.md says for two dispatchers on one host), so push and pull can both be enabled.
MODES: Dict[str, List[str]] = {
    "push": [GATEWAY, dispatcher("push"), worker("push")],
    "pull": [GATEWAY, dispatcher("pull"), worker("pull")],
    "local": [GATEWAY, dispatcher("local")],
}
ALL_UNITS = [GATEWAY, dispatcher("push"), worker("push"), dispatcher("pull"), worker("pull"), dispatcher("local")]
ENABLED = ALL_UNITS[:5]  # everything but the local dispatcher, which would compete for the queue
PORTS = {"push": 5555, "pull": 5556}
DEBS = "/var/cache/faas-test"
# `systemd-analyze security` exposure of the loaded units as shipped when this suite was written
# (0 = locked down, 10 = wide open; systemd 252). A change may lower them, never raise them. (The
# offline analysis of the unit files in scripts/verify-units.sh says 1.4, 1.8 and 1.8.) The
# executor sandbox (issue #9) raised the dispatcher's and the worker's from 1.6 to 1.8: switching
# executors to their own user takes CAP_SETUID, CAP_SETGID and CAP_KILL (ambient), only partly
# offset by ProtectHome=yes, ProcSubset=pid, RemoveIPC= and ~@resources (offline: still 1.8).
EXPOSURE_MAX = {"faas-gateway.service": 1.3, "faas-dispatcher@": 1.8, "faas-worker@": 1.8}
# Where tasks keep state between runs: executors run as faas-exec and may write nowhere but their
# private directories (and a unit's private /tmp), so the site grants this one (see deployment).
SCRATCH = "/var/lib/faas-scratch"
# Executors' command lines are shown by `ps` and `systemctl status`: one screen line each.
MAX_PROCESS_LINE = 200


# --- Functions sent as tasks. Built by factories so dill pickles them by value: the executors
# cannot import this module. ---

def napper() -> Callable[[float, Any], Any]:
    def nap(secs: float, value: Any) -> Any:
        import time

        time.sleep(secs)
        return value

    return nap


def sleeper_once() -> Callable[[str, float, Any], Any]:
    """Sleeps on the first run only (a marker file in SCRATCH, shared by all units' executors),
    so a task handed back by a drain finishes at once when it runs again."""

    def once(marker: str, secs: float, value: Any) -> Any:
        import os
        import time

        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(secs)
        return value

    return once


def stderr_writer() -> Callable[[str], str]:
    def say(text: str) -> str:
        import sys

        print(text, file=sys.stderr, flush=True)
        return text

    return say


# --- Fixtures and helpers. ---

@pytest.fixture(scope="session")
def package(container: Container) -> str:
    """`dpkg -i` of the built .deb (and Debian's python3-dill when the host lacks it)."""
    p = container.run("sh", "-c", f"dpkg -i {DEBS}/*.deb </dev/null", check=False, timeout=300)
    assert p.returncode == 0, f"dpkg -i failed ({p.returncode}):\n{p.stdout}{p.stderr}"
    return p.stdout + p.stderr


@pytest.fixture(scope="session")
def deployment(container: Container, package: str) -> Container:
    """The site configuration an operator would write: drop-ins in /etc/faas/*.d/ and unit
    drop-ins, then `systemctl enable` of the push and pull units (into faas.target)."""
    c = container
    # Two executor slots everywhere (not one per CPU), and drains short enough to test.
    c.write("/etc/faas/worker.d/10-site.toml", "processes = 2\ndrain_timeout_secs = 5.0\n")
    # Dispatchers at debug: their per-task lines (task RUNNING, task COMPLETED) are debug, and the
    # tests follow each task through the journal (docs/operations.md, "Logs").
    c.write("/etc/faas/dispatcher.d/10-site.toml",
            'log_level = "debug"\ndrain_timeout_secs = 3.0\n[local]\nprocesses = 2\n')
    c.write("/etc/systemd/system/faas-dispatcher@pull.service.d/10-port.conf",
            "[Service]\nExecStart=\nExecStart=/usr/bin/faas-dispatcher -m %i -p 5556\n")
    c.write("/etc/systemd/system/faas-worker@pull.service.d/10-dispatcher.conf",
            "[Service]\nEnvironment=FAAS_WORKER_DISPATCHER=tcp://127.0.0.1:5556\n")
    # A directory the executor user may write, kept across restarts (docs/operations.md, "The
    # units' own sandbox": ReadWritePaths= in a drop-in).
    c.run("install", "-d", "-o", "faas-exec", "-g", "faas-exec", "-m", "0700", SCRATCH)
    for unit in ("faas-dispatcher@", "faas-worker@"):
        c.write(f"/etc/systemd/system/{unit}.service.d/20-scratch.conf",
                f"[Service]\nReadWritePaths={SCRATCH}\n")
    c.systemctl("daemon-reload")
    c.systemctl("enable", *ENABLED)
    return c


def use(c: Container, mode: str) -> Client:
    """Exactly the units of `mode` running (others stopped), the dispatcher with its worker
    registered; returns a client."""
    want = MODES[mode]
    # One job per unit, queued in this order: workers before the dispatcher they report to.
    c.stop(*sorted((u for u in ALL_UNITS if u not in want), key=lambda u: not u.startswith("faas-worker")))
    c.start(*want)
    for u in want:
        assert c.active(u), f"{u} not active: {c.show(u, 'ActiveState', 'SubState', 'Result')}"
    if mode != "local":
        wait_workers(c, mode, 1)
    return Client(URL)


def wait_workers(c: Container, mode: str, n: int) -> None:
    """Until the dispatcher's STATUS= line counts `n` workers (it is refreshed once a second)."""
    unit = dispatcher(mode)
    wait_until(lambda: c.prop(unit, "StatusText").startswith(f"{mode}: {n} worker"), 30,
               f"{unit} reporting {n} worker(s) in STATUS")


def wait_status(client: Client, task_id: str, want: str, timeout: float = 30) -> None:
    wait_until(lambda: client.status(task_id) == want, timeout, f"task {task_id} {want}", every=0.05)


def entries(c: Container, unit: str, after: str, **match: str) -> List[Dict[str, Any]]:
    """The daemon's own journal entries (not systemd's about it) of `unit` after the cursor,
    whose fields equal `match`."""
    return c.journal(f"_SYSTEMD_UNIT={unit}", *(f"{k}={v}" for k, v in match.items()), after=after)


def sigstop_until_restarted(c: Container, unit: str, while_stopped: Callable[[], None]) -> None:
    """SIGSTOPs the unit's main process, runs `while_stopped`, then waits until systemd's watchdog
    killed and restarted it: a new main process, one more restart, "Watchdog timeout" logged."""
    before = c.show(unit, "MainPID", "NRestarts")
    cursor = c.cursor()
    start = time.monotonic()
    c.systemctl("kill", "--signal=SIGSTOP", "--kill-whom=main", unit)
    while_stopped()

    def restarted() -> bool:
        now = c.show(unit, "MainPID", "NRestarts", "ActiveState", "SubState")
        return (now["MainPID"] not in ("0", before["MainPID"])
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1
                and now["ActiveState"] == "active" and now["SubState"] == "running")

    # WatchdogSec=10s, then RestartSec=5s, then the start itself.
    wait_until(restarted, 60, f"{unit} restarted by the watchdog", every=0.2)
    said = [e["MESSAGE"] for e in c.journal(f"UNIT={unit}", "_PID=1", after=cursor)]
    assert any("Watchdog timeout" in m for m in said), f"no watchdog message for {unit}: {said}"
    print(f"{unit}: SIGSTOP -> watchdog -> running again in {time.monotonic() - start:.1f} s")


# Lists the processes of a cgroup from inside the container (its pid namespace and cgroup view).
PROCESSES = r"""
import json, sys
out = []
for pid in open(f"/sys/fs/cgroup{sys.argv[1]}/cgroup.procs").read().split():
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        uid = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Uid:"))
    except OSError:  # ended meanwhile
        continue
    out.append({"pid": pid, "uid": uid, "cmdline": cmdline.replace(b"\0", b" ").decode(errors="replace").strip()})
print(json.dumps(out))
"""


def processes(c: Container, unit: str) -> List[Dict[str, str]]:
    """pid, uid and command line (as `ps` shows it) of every process in the unit's cgroup."""
    cgroup = c.prop(unit, "ControlGroup")
    return json.loads(c.run("/usr/bin/python3", "-c", PROCESSES, cgroup).stdout)


# --- Cases. ---

def test_install_creates_user_and_starts_nothing(container: Container, package: str) -> None:
    c = container
    assert "Setting up faas" in package
    passwd = c.run("getent", "passwd", "faas").stdout.strip().split(":")
    assert passwd[5:] == ["/var/lib/faas", "/usr/sbin/nologin"], passwd
    # The executor user, in none of the daemons' groups; settings closed to it (postinst).
    assert c.run("id", "-nG", "faas-exec").stdout.split() == ["faas-exec"]
    for path, want in (("/etc/faas", "root faas 750"), ("/etc/default/faas", "root root 600")):
        assert c.run("stat", "-c", "%U %G %a", path).stdout.strip() == want, path
    files = c.systemctl("list-unit-files", "--plain", "--no-legend", "faas*").stdout.split("\n")
    states = {line.split()[0]: line.split()[1] for line in files if line.strip()}
    assert states == {"faas-dispatcher@.service": "disabled", "faas-gateway.service": "disabled",
                      "faas-worker@.service": "disabled", "faas.target": "disabled"}, states
    loaded = c.systemctl("list-units", "--all", "--plain", "--no-legend", "faas*").stdout.strip()
    assert loaded == "", f"units loaded or running after install:\n{loaded}"
    # docs/operations.md: systemd creates the state directory when the first unit starts.
    assert not c.path("/var/lib/faas").exists()
    for daemon in ("faas-gateway", "faas-dispatcher", "faas-worker"):
        c.run(daemon, "--check-config")


def test_target_starts_units_active_only_after_ready(deployment: Container) -> None:
    c = deployment
    c.stop("faas.target", *ALL_UNITS)
    started = time.monotonic()
    c.start("faas.target")  # the target is ordered after what it wants: returns once all are READY
    print(f"systemctl start faas.target: {time.monotonic() - started:.2f} s")
    for u in ENABLED:
        s = c.show(u, "Type", "ActiveState", "SubState", "StatusText")
        assert (s["Type"], s["ActiveState"], s["SubState"]) == ("notify", "active", "running"), (u, s)
        assert s["StatusText"], f"{u} sent no STATUS="
    # Active means serving: one attempt each, no retries.
    assert requests.get(f"{URL}/healthz", timeout=5).json() == {"status": "ok"}
    for port in PORTS.values():
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

    # A worker is READY only once its dispatcher welcomed it: without one it stays "activating".
    c.stop(worker("push"), dispatcher("push"))
    cursor = c.cursor()
    c.systemctl("start", "--no-block", worker("push"))
    wait_until(lambda: entries(c, worker("push"), cursor, MESSAGE="worker ready"), 30,
               "worker@push with warm executors")
    wait_until(lambda: c.prop(worker("push"), "StatusText").startswith("waiting for dispatcher"), 30,
               "worker@push saying it waits for its dispatcher")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert c.prop(worker("push"), "ActiveState") == "activating", "worker active without a dispatcher"
        time.sleep(0.1)
    c.start(dispatcher("push"))
    wait_until(lambda: c.active(worker("push")), 30, "worker@push active after its dispatcher started")
    welcomed = entries(c, worker("push"), cursor, MESSAGE="registered with dispatcher")
    assert welcomed, "worker active without having registered"
    assert c.systemctl("is-active", "faas.target").stdout.strip() == "active"


@pytest.mark.parametrize("mode", ["push", "pull", "local"])
def test_tasks_end_to_end_over_http(deployment: Container, mode: str) -> None:
    c = deployment
    client = use(c, mode)
    cursor = c.cursor()
    k = 7

    def times_k(x: int) -> int:
        return x * k

    double = client.register(lambda x: x * 2, name="double")
    tasks = {client.execute(double, i): ("COMPLETED", 2 * i) for i in range(6)}
    tasks[client.execute(client.register(times_k), 6)] = ("COMPLETED", 42)
    boom = client.execute(client.register(lambda: 1 / 0, name="boom"))
    for tid, want in tasks.items():
        assert client.wait(tid, timeout=30) == want
    status, exc = client.wait(boom, timeout=30)
    assert status == "FAILED" and isinstance(exc, ZeroDivisionError), (status, exc)
    # Each task went through this mode's units (journal fields), not some other dispatcher.
    for tid in [*tasks, boom]:
        assert entries(c, dispatcher(mode), cursor, TASK_ID=tid), f"{dispatcher(mode)} never logged {tid}"
        if mode != "local":
            ran = entries(c, worker(mode), cursor, TASK_ID=tid, MESSAGE="task started")
            assert ran and ran[0]["WORKER"] == c.task_field(tid, "worker"), (tid, ran)


def test_journal_carries_task_fields(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    cursor = c.cursor()
    fid = client.register(stderr_writer(), name="say")
    tid = client.execute(fid, "a line on the executor's stderr")
    assert client.wait(tid, timeout=30) == ("COMPLETED", "a line on the executor's stderr")
    worker_id = c.task_field(tid, "worker")
    d = dispatcher("push")
    running = entries(c, d, cursor, MESSAGE="task RUNNING", TASK_ID=tid)
    assert len(running) == 1, running
    e = running[0]
    assert (e["FUNCTION_ID"], e["WORKER"], e["ATTEMPT"]) == (fid, worker_id, "1"), e
    assert (e["PRIORITY"], e["SYSLOG_IDENTIFIER"]) == ("7", "faas-dispatcher"), e
    assert entries(c, d, cursor, MESSAGE="task COMPLETED", TASK_ID=tid, PRIORITY="7")
    started = entries(c, worker("push"), cursor, MESSAGE="task started", TASK_ID=tid)
    assert started and (started[0]["FUNCTION_ID"], started[0]["WORKER"]) == (fid, worker_id), started
    said = entries(c, worker("push"), cursor, MESSAGE="a line on the executor's stderr")
    assert said and said[0]["STREAM"] == "stderr" and said[0]["PRIORITY"] == "6", said
    # The documented query: everything about one task, from every unit.
    units = {e.get("_SYSTEMD_UNIT") for e in c.journal(f"TASK_ID={tid}")}
    assert units == {d, worker("push")}, units


def test_journal_priorities_info_6_warning_4_error_3(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    cursor = c.cursor()
    d, w = dispatcher("push"), worker("push")

    # Warning: a worker killed (-9) with a running task is lost; its task fails (max_retries = 0).
    tid = client.execute(client.register(napper()), 60, "never")
    wait_status(client, tid, "RUNNING")
    restarts = int(c.prop(w, "NRestarts"))
    c.systemctl("kill", "--signal=SIGKILL", "--kill-whom=main", w)
    status, exc = client.wait(tid, timeout=30)
    assert status == "FAILED" and str(exc).startswith("WorkerFailure"), (status, exc)
    lost = entries(c, d, cursor, MESSAGE="worker lost with running tasks")
    assert lost and lost[0]["PRIORITY"] == "4", lost
    wait_until(lambda: int(c.prop(w, "NRestarts")) == restarts + 1 and c.active(w), 30,
               "the killed worker restarted (Restart=on-failure)")

    # Error: the dispatcher cannot reach Redis at start (a runtime drop-in points it elsewhere).
    dropin = "/run/systemd/system/faas-dispatcher@push.service.d/50-unreachable.conf"
    c.write(dropin, "[Service]\nEnvironment=FAAS_DISPATCHER_REDIS=redis://127.0.0.1:9\n")
    try:
        c.systemctl("daemon-reload")
        c.systemctl("restart", "--no-block", d)
        errors = wait_until(lambda: entries(c, d, cursor, PRIORITY="3", SYSLOG_IDENTIFIER="faas-dispatcher"),
                            30, "an error-level entry of the dispatcher")
        assert "Connection refused" in errors[0]["MESSAGE"], errors
    finally:
        c.path(dropin).unlink()
        c.systemctl("daemon-reload")
        c.systemctl("restart", d)
    # Info: what the daemons log about tasks (6, not 5 = notice); the dispatcher's RUNNING is debug (7).
    assert entries(c, w, cursor, MESSAGE="task started", TASK_ID=tid, PRIORITY="6")
    assert entries(c, d, cursor, MESSAGE="task RUNNING", TASK_ID=tid, PRIORITY="7")
    # No faas daemon ever logged at notice: `journalctl -p notice` shows only warnings and errors.
    ours = c.journal("SYSLOG_IDENTIFIER=faas-gateway", "SYSLOG_IDENTIFIER=faas-dispatcher",
                     "SYSLOG_IDENTIFIER=faas-worker")
    assert {"3", "4", "6"} <= {e["PRIORITY"] for e in ours} <= {"3", "4", "6", "7"}, \
        sorted({(e["PRIORITY"], e["MESSAGE"]) for e in ours})


def test_status_shows_a_readable_status_line(deployment: Container) -> None:
    c = deployment
    use(c, "push")
    wait_until(lambda: not c.prop(worker("push"), "StatusText").startswith("waiting"), 30,
               "the worker's STATUS= after registering")
    want = {
        GATEWAY: r"listening on 127\.0\.0\.1:8000, ",
        dispatcher("push"): r"push: 1 workers?, 2 slots, \d+ free, \d+ running, backlog \d+",
        worker("push"): r".*\btcp://127\.0\.0\.1:5555\b.*",
    }
    for unit, pattern in want.items():
        text = c.prop(unit, "StatusText")
        assert re.match(pattern, text) and len(text) <= 120, (unit, text)
        out = c.systemctl("status", "--full", "--lines=0", unit).stdout
        assert f'Status: "{text}"' in out, out


def test_status_process_list_is_short(deployment: Container) -> None:
    """Expected to fail until the executor sandbox branch (issue #9) lands: executors carry the
    whole embedded executor source in argv, so `ps` and `systemctl status` print pages of Python."""
    c = deployment
    client = use(c, "push")
    c.start(dispatcher("local"))  # another executor pool, forking per task, next to the worker's
    try:
        tid = client.execute(client.register(napper()), 3, "done")
        wait_status(client, tid, "RUNNING")
        for unit in (worker("push"), dispatcher("local")):
            lines = [p["cmdline"] for p in processes(c, unit)]
            assert len(lines) >= 2, (unit, lines)  # the daemon and its executors
            long = [line[:120] + "..." for line in lines if len(line) > MAX_PROCESS_LINE or "\n" in line]
            assert not long, f"{unit}: process command lines longer than {MAX_PROCESS_LINE}: {long}"
            out = c.systemctl("status", "--full", "--lines=0", unit).stdout
            tree = out.split("CGroup:", 1)[1].splitlines()
            assert all(len(line) <= MAX_PROCESS_LINE + 40 for line in tree), (unit, out[:2000])
        assert client.wait(tid, timeout=30)[0] == "COMPLETED"
    finally:
        c.stop(dispatcher("local"))


def test_watchdog_restarts_a_stopped_dispatcher(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    nap = client.register(napper())
    running = client.execute(nap, 4, "ran through the restart")
    wait_status(client, running, "RUNNING")
    later: List[str] = []
    sigstop_until_restarted(c, dispatcher("push"), lambda: later.append(client.execute(nap, 0, "later")))
    # The worker kept its task and reports it to the new dispatcher; what was queued meanwhile runs.
    assert client.wait(running, timeout=60) == ("COMPLETED", "ran through the restart")
    assert client.wait(later[0], timeout=60) == ("COMPLETED", "later")


def test_watchdog_restarts_a_stopped_worker(deployment: Container) -> None:
    """With max_retries = 1 the lost task is queued again and completes on the restarted worker
    (max_retries = 0, the default, fails it with WorkerFailure: the kill -9 in the priorities case)."""
    c = deployment
    retries = "/etc/faas/dispatcher.d/20-retries.toml"
    c.write(retries, "max_retries = 1\n")
    try:
        use(c, "push")
        c.systemctl("restart", dispatcher("push"))
        wait_workers(c, "push", 1)
        client = Client(URL)
        once = client.register(sleeper_once())
        tid = client.execute(once, f"{SCRATCH}/stopped-{uuid.uuid4()}", 60, "second run")
        wait_status(client, tid, "RUNNING")

        def requeued() -> None:
            # Missed heartbeats: the worker is lost long before the watchdog fires.
            wait_until(lambda: c.task_field(tid, "status") == "QUEUED", 30, "the lost task queued again")
            assert c.task_field(tid, "attempts") == "1"

        sigstop_until_restarted(c, worker("push"), requeued)
        assert client.wait(tid, timeout=60) == ("COMPLETED", "second run")
        assert c.task_field(tid, "attempts") == "2"
    finally:
        c.path(retries).unlink()
        c.systemctl("restart", dispatcher("push"))


def test_watchdog_restarts_a_stopped_gateway(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    tid = client.execute(client.register(napper()), 2, "finished while the gateway hung")

    def hangs() -> None:
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(f"{URL}/healthz", timeout=1)

    sigstop_until_restarted(c, GATEWAY, hangs)
    assert requests.get(f"{URL}/healthz", timeout=5).status_code == 200
    assert client.wait(tid, timeout=30) == ("COMPLETED", "finished while the gateway hung")


def test_invalid_dropin_fails_with_78_without_restart_loop(deployment: Container) -> None:
    c = deployment
    use(c, "push")
    units = {GATEWAY: "gateway", dispatcher("push"): "dispatcher", worker("push"): "worker"}
    bad = {unit: f"/etc/faas/{name}.d/99-invalid.toml" for unit, name in units.items()}
    try:
        for unit, path in bad.items():
            assert "78" in c.prop(unit, "RestartPreventExitStatus").split(), unit
            c.write(path, "no_such_key = 1\n")
        cursor = c.cursor()
        c.systemctl("restart", *units, check=False)

        def failed_78() -> bool:
            return all(c.show(u, "ActiveState", "ExecMainStatus") == {"ActiveState": "failed", "ExecMainStatus": "78"}
                       for u in units)

        wait_until(failed_78, 30, "all three units failed with status 78")
        before = {u: c.prop(u, "NRestarts") for u in units}
        # Watch for longer than RestartSec: no restart is scheduled, nothing comes back.
        window = int(c.prop(GATEWAY, "RestartUSec").rstrip("s") or 5) + 3
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            for u in units:
                s = c.show(u, "ActiveState", "NRestarts")
                assert s == {"ActiveState": "failed", "NRestarts": before[u]}, (u, s)
            time.sleep(0.2)
        for unit, path in bad.items():
            out = c.systemctl("status", "--full", unit, check=False).stdout
            assert "status=78" in out and "99-invalid.toml" in out and "no_such_key" in out, out
            # The daemon's message is an error for `journalctl -p err` too (written before logging
            # is set up, with a "<3>" prefix that journald turns into the priority).
            said = [e for e in c.journal(f"_SYSTEMD_UNIT={unit}", after=cursor) if "99-invalid.toml" in e["MESSAGE"]]
            assert said and all(e["PRIORITY"] == "3" and not e["MESSAGE"].startswith("<") for e in said), said
    finally:
        for path in bad.values():
            c.path(path).unlink(missing_ok=True)
        c.systemctl("reset-failed", *units, check=False)
    use(c, "push")


def start_all_enabled(c: Container) -> Client:
    """faas.target with every enabled unit (the push and the pull pair), workers registered."""
    c.stop(dispatcher("local"))
    c.start("faas.target")
    for mode in PORTS:
        wait_workers(c, mode, 1)
    return Client(URL)


def assert_workers_stopped_first(c: Container, cursor: str) -> None:
    """Each worker was stopped before its dispatcher began to stop (the worker reports to it)."""
    said = [e["MESSAGE"] for e in c.journal("_PID=1", after=cursor)]
    for mode in PORTS:
        stopped = said.index(f"Stopped faas-worker@{mode}.service - faas worker ({mode} mode).")
        stopping = said.index(f"Stopping faas-dispatcher@{mode}.service - faas task dispatcher ({mode} mode)...")
        assert stopped < stopping, mode


def test_stop_target_drains_and_loses_nothing(deployment: Container) -> None:
    c = deployment
    client = start_all_enabled(c)
    once = client.register(sleeper_once())
    short = [client.execute(once, f"{SCRATCH}/short-{uuid.uuid4()}", 2, "short") for _ in range(2)]
    # Longer than the workers' 5 s drain: handed back, then run again (instantly) after the start.
    long = [client.execute(once, f"{SCRATCH}/long-{uuid.uuid4()}", 30, "long") for _ in range(2)]
    for tid in short + long:  # 4 slots: 2 on the push worker, 2 on the pull worker
        wait_status(client, tid, "RUNNING")
    queued = [client.execute(once, f"{SCRATCH}/queued-{uuid.uuid4()}", 0, "queued") for _ in range(4)]
    started = time.monotonic()
    cursor = c.cursor()
    c.stop("faas.target")
    # The target's own stop job ends first (it is ordered after its units); the units' drains go on.
    wait_until(lambda: all(c.prop(u, "ActiveState") == "inactive" for u in ENABLED), 60,
               "every unit of faas.target stopped")
    print(f"systemctl stop faas.target: all units stopped after {time.monotonic() - started:.1f} s")
    for u in ENABLED:
        assert c.prop(u, "Result") == "success", u  # no stop timeout, no SIGKILL
    assert_workers_stopped_first(c, cursor)
    status = {tid: c.task_field(tid, "status") for tid in short + long + queued}
    assert all(status[t] == "COMPLETED" for t in short), status  # finished within the drain
    assert all(status[t] == "QUEUED" for t in long), status      # handed back at the drain deadline
    assert all(s in ("COMPLETED", "QUEUED") for s in status.values()), status
    c.start("faas.target")
    for tid in short + long + queued:
        assert client.wait(tid, timeout=60)[0] == "COMPLETED", tid


def test_stop_of_target_and_units_waits_for_the_drain(deployment: Container) -> None:
    """docs/operations.md: `systemctl stop faas.target 'faas*'` returns only once every daemon
    has stopped (the target's stop job alone ends before its units' drains)."""
    c = deployment
    client = start_all_enabled(c)
    once = client.register(sleeper_once())
    tid = client.execute(once, f"{SCRATCH}/glob-{uuid.uuid4()}", 30, "long")
    wait_status(client, tid, "RUNNING")
    started = time.monotonic()
    cursor = c.cursor()
    c.systemctl("stop", "faas.target", "faas*", timeout=120)
    took = time.monotonic() - started
    print(f"systemctl stop faas.target 'faas*': {took:.1f} s")
    assert [u for u in ENABLED if c.prop(u, "ActiveState") != "inactive"] == []
    assert_workers_stopped_first(c, cursor)
    assert took >= 4, f"returned after {took:.1f} s, before a 5 s drain could end"
    assert c.task_field(tid, "status") == "QUEUED"
    c.start("faas.target")
    assert client.wait(tid, timeout=60) == ("COMPLETED", "long")


def test_restart_dispatcher_under_load_loses_nothing(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    nap = client.register(napper())
    submitted: List[str] = []
    errors: List[BaseException] = []

    def submit() -> None:
        sender = Client(URL)
        try:
            for i in range(80):
                submitted.append(sender.execute(nap, 0.05, i))
                time.sleep(0.04)
        except BaseException as e:  # reported below; the gateway must accept throughout
            errors.append(e)

    t = threading.Thread(target=submit)
    t.start()
    wait_until(lambda: len(submitted) >= 20, 30, "20 tasks submitted")
    pid = c.prop(dispatcher("push"), "MainPID")
    c.systemctl("restart", dispatcher("push"))
    assert c.prop(dispatcher("push"), "MainPID") != pid
    t.join(timeout=60)
    assert not errors and len(submitted) == 80, errors
    for i, tid in enumerate(submitted):
        assert client.wait(tid, timeout=60) == ("COMPLETED", i), tid


def test_restart_local_dispatcher_finishes_or_hands_back(deployment: Container) -> None:
    """docs/operations.md, "Upgrade": a local dispatcher's restart drains; a task that outlasts the
    drain (3 s here) is handed back, whatever max_retries says, and runs again after the start."""
    c = deployment
    client = use(c, "local")
    once = client.register(sleeper_once())
    short = client.execute(once, f"{SCRATCH}/short-{uuid.uuid4()}", 1, "short")
    long = client.execute(once, f"{SCRATCH}/long-{uuid.uuid4()}", 30, "long")
    for tid in (short, long):
        wait_status(client, tid, "RUNNING")
    started = time.monotonic()
    c.systemctl("restart", dispatcher("local"))
    print(f"systemctl restart faas-dispatcher@local: {time.monotonic() - started:.1f} s")
    assert client.wait(short, timeout=30) == ("COMPLETED", "short")
    assert c.task_field(short, "attempts") == "1"  # finished within the drain
    assert client.wait(long, timeout=30) == ("COMPLETED", "long")
    assert c.task_field(long, "attempts") == "2"  # handed back, run again


def test_upgrade_keeps_running_services_running(deployment: Container) -> None:
    c = deployment
    client = use(c, "push")
    units = MODES["push"]
    pids = {u: c.prop(u, "MainPID") for u in units}
    with c.path("/etc/default/faas").open("a") as f:
        f.write("# edited by the operator\n")
    out = c.run("sh", "-c", f"dpkg -i {DEBS}/faas_*.deb </dev/null", timeout=300)
    assert "keep the old version until restarted" in out.stdout + out.stderr, out.stdout + out.stderr
    assert {u: c.prop(u, "MainPID") for u in units} == pids, "the upgrade restarted a daemon"
    assert all(c.active(u) for u in units)
    assert c.path("/etc/default/faas").read_text().endswith("# edited by the operator\n")
    assert client.wait(client.execute(client.register(lambda: "up"))) == ("COMPLETED", "up")
    # The documented restart order after an upgrade.
    for u in units:
        c.systemctl("restart", u)
    wait_workers(c, "push", 1)
    assert client.wait(client.execute(client.register(lambda: "new"))) == ("COMPLETED", "new")


def test_security_exposure_stays_low(deployment: Container) -> None:
    c = deployment
    for unit in ALL_UNITS:
        out = c.run("systemd-analyze", "security", "--no-pager", unit).stdout
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert m, out[-500:]
        limit = next(v for k, v in EXPOSURE_MAX.items() if unit.startswith(k))
        print(f"{unit}: exposure {m.group(1)} (at most {limit})")
        assert float(m.group(1)) <= limit, (unit, m.group(1))


def test_executors_run_as_their_own_user(deployment: Container) -> None:
    c = deployment
    users = {}
    for daemon in ("dispatcher", "worker"):
        cfg = tomllib.loads(c.run(f"faas-{daemon}", "--check-config").stdout)
        users[daemon] = cfg.get("executor", {}).get("user")
    if not all(users.values()):
        pytest.skip(f"the package's configuration sets no executor.user ({users}): the executor "
                    "sandbox (issue #9) has not landed")
    client = use(c, "push")
    c.start(dispatcher("local"))
    try:
        tid = client.execute(client.register(napper()), 3, "done")
        wait_status(client, tid, "RUNNING")
        faas_uid = c.run("id", "-u", "faas").stdout.strip()
        for unit, daemon in ((worker("push"), "worker"), (dispatcher("local"), "dispatcher")):
            want = c.run("id", "-u", users[daemon]).stdout.strip()
            assert want != faas_uid
            main = c.prop(unit, "MainPID")
            procs = processes(c, unit)
            assert len(procs) >= 2, (unit, procs)  # the daemon and its executors
            for p in procs:
                assert p["uid"] == (faas_uid if p["pid"] == main else want), (unit, p)
        assert client.wait(tid, timeout=30)[0] == "COMPLETED"  # nothing left running for the next case
    finally:
        c.stop(dispatcher("local"))


def test_remove_stops_everything_and_purge_removes_what_the_docs_say(deployment: Container) -> None:
    c = deployment
    use(c, "push")
    c.start(dispatcher("local"))  # running, but not enabled: removal stops it too
    running = [u for u in ALL_UNITS if c.active(u)]
    assert len(running) == 4, running
    c.run("sh", "-c", "dpkg -r faas </dev/null", timeout=300)
    left = c.systemctl("list-units", "--all", "--plain", "--no-legend", "--state=active,activating,deactivating",
                       "faas*").stdout.strip()
    assert left == "", f"still running after dpkg -r:\n{left}"
    assert not c.path("/usr/bin/faas-dispatcher").exists()
    for conf in ("/etc/faas/dispatcher.toml", "/etc/default/faas"):  # conffiles stay until purge
        assert c.path(conf).exists(), conf
    c.run("sh", "-c", "dpkg --purge faas </dev/null", timeout=300)
    gone = ["/etc/faas/gateway.toml", "/etc/faas/dispatcher.toml", "/etc/faas/worker.toml",
            "/etc/default/faas", "/var/lib/faas", "/usr/lib/systemd/system/faas-gateway.service",
            "/usr/lib/systemd/system/faas-dispatcher@.service", "/usr/lib/sysusers.d/faas.conf",
            # enablement links, also those of template instances
            "/etc/systemd/system/faas.target.wants", "/etc/systemd/system/multi-user.target.wants/faas-gateway.service",
            "/etc/systemd/system/multi-user.target.wants/faas-dispatcher@push.service",
            "/etc/systemd/system/multi-user.target.wants/faas-worker@pull.service"]
    assert [p for p in gone if c.path(p).exists() or c.path(p).is_symlink()] == []
    # What stays: the operator's drop-ins (both kinds) and the faas user.
    for kept in ("/etc/faas/dispatcher.d/10-site.toml", "/etc/faas/worker.d/10-site.toml",
                 "/etc/systemd/system/faas-dispatcher@pull.service.d/10-port.conf"):
        assert c.path(kept).exists(), kept
    c.run("getent", "passwd", "faas")
    assert c.run("dpkg", "-s", "faas", check=False).returncode != 0
