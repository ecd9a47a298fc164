"""Hostile functions: whatever a user's function does, it is contained (FAILED with a clear cause,
or harmless), the daemons keep running and the next ordinary task works.

Runs against local mode with fork and with reuse isolation and against push mode. As root (CI
runs as root) executors run as user ``nobody`` on Debian's /usr/bin/python3 with python3-dill, as
an installed faas runs them as ``faas-exec``; the daemons get a password-protected Redis through
``FAAS_*_REDIS`` and a stand-in for /etc/faas (root-only, mode 0750) with a secret in it. Without
root (or without that interpreter) the cases that need a separate executor user are skipped with
the reason; the others run with executors as the test's own user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from faas_client import Client
from faas_stack import PYTHON, Stack

SECRET = "hunter2"
SANDBOX_PYTHON = os.environ.get("FAAS_TEST_SANDBOX_PYTHON", "/usr/bin/python3")
PLANTED = "faas_planted_module"


def sandbox_unavailable() -> str:
    """Why executors cannot run as a separate user here ("" when they can)."""
    if os.geteuid() != 0:
        return "switching the executor user needs root (CI runs as root)"
    probe = subprocess.run([SANDBOX_PYTHON, "-I", "-c", "import dill"], capture_output=True)
    if probe.returncode != 0:
        return f"{SANDBOX_PYTHON} cannot import dill (apt-get install python3-dill)"
    return ""


WHY_NOT = sandbox_unavailable()
SANDBOXED = not WHY_NOT
needs_sandbox = pytest.mark.skipif(not SANDBOXED, reason=WHY_NOT or "n/a")


class Hostile:
    """A stack plus what the hostile cases need to know about it."""

    def __init__(self, stack: Stack, etc: Path, lib: Path) -> None:
        self.stack = stack
        self.client = Client(stack.url, check_versions=False)  # executors: Debian's dill
        self.etc = etc
        self.lib = lib
        self.secret_file = etc / "dispatcher.d" / "10-secret.toml"

    def daemon_pids(self) -> dict[str, int]:
        return {f"{name}{i}": p.pid for i, (name, p) in enumerate(self.stack.named_procs()) if name != "redis"}

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> tuple[str, Any]:
        return self.client.wait(self.client.execute(self.client.register(fn), *args), timeout=timeout)

    def assert_healthy(self) -> None:
        """Every daemon still runs and an ordinary task completes."""
        dead = [(n, p.returncode) for n, p in zip(self.stack.names, self.stack.procs) if p.poll() is not None]
        assert not dead, f"daemons died: {dead}"
        assert self.client.run(lambda x: x * 2, 21) == 42


def platform_failure(result: tuple[str, Any], name: str) -> str:
    status, exc = result
    assert status == "FAILED", result
    assert type(exc).__name__ == name and str(exc).startswith(f"{name}:"), repr(exc)
    return str(exc)


def stand_in_etc(base: Path) -> Path:
    """A stand-in for the package's /etc/faas (root:faas 0750; here root:root) with a secret."""
    etc = base / "etc" / "faas"
    for d in ("dispatcher.d", "worker.d"):
        (etc / d).mkdir(parents=True)
        secret = etc / d / "10-secret.toml"
        secret.write_text(f"# Redis password: {SECRET}\n")
        secret.chmod(0o640)
    etc.chmod(0o750)
    return etc


SHAPES = {
    "local-fork": ("local", "fork"),
    "local-reuse": ("local", "reuse"),
    "push": ("push", "fork"),
}


def hostile_stack(base: Path, mode: str, isolation: str, network: str = "host") -> Hostile:
    base.chmod(0o755)  # like /etc and /opt: traversable by everyone
    etc = stand_in_etc(base)
    lib = base / "lib"  # an executor.pythonpath entry: root-owned, readable, not writable
    lib.mkdir(mode=0o755)
    limits = (
        f'isolation = "{isolation}"\nnetwork = "{network}"\ntask_timeout_secs = 5\n'
        "memory_limit_mb = 256\nfile_size_limit_mb = 8\nprocess_limit = 64\n"
    )
    (base / "stack").mkdir(mode=0o700)  # logs and Redis files: the daemons' only
    stack = Stack(
        base / "stack",
        mode=mode,
        processes=2,
        workers=1,
        executor=limits,
        preload=(),
        user="nobody" if SANDBOXED else "",
        python=SANDBOX_PYTHON if SANDBOXED else PYTHON,
        pythonpath=[lib],
        config_dir=etc,
        env={"SECRET_API_KEY": SECRET},
        redis_password=SECRET,
    )
    return Hostile(stack.start(), etc, lib)


@pytest.fixture(scope="module", params=list(SHAPES))
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    mode, isolation = SHAPES[request.param]
    base = Path(tempfile.mkdtemp(prefix="faas-hostile-"))
    h = hostile_stack(base, mode, isolation)
    h.isolation = isolation  # type: ignore[attr-defined]
    yield h
    h.stack.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_environment_holds_no_secret(hostile: Hostile) -> None:
    def snoop() -> tuple[dict[str, str], str]:
        import os

        try:  # the environment the process started with (unreadable once it is not dumpable)
            raw = open("/proc/self/environ", "rb").read().decode(errors="replace")
        except PermissionError:
            raw = ""
        return dict(os.environ), raw

    status, (env, raw) = hostile.run(snoop)
    assert status == "COMPLETED"
    assert SECRET not in repr(env) and SECRET not in raw
    assert not [k for k in env if k.startswith("FAAS_") or k in ("NOTIFY_SOCKET", "SECRET_API_KEY")], env
    hostile.assert_healthy()


@needs_sandbox
def test_daemon_environment_is_unreadable(hostile: Hostile) -> None:
    def snoop(pids: dict[str, int]) -> dict[str, str]:
        out = {}
        for name, pid in pids.items():
            try:
                out[name] = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError as e:
                out[name] = type(e).__name__
        return out

    status, seen = hostile.run(snoop, hostile.daemon_pids())
    assert status == "COMPLETED"
    # The process may be invisible (hidepid) or unreadable; never its content.
    assert all(v in ("PermissionError", "FileNotFoundError") for v in seen.values()), seen
    hostile.assert_healthy()


@needs_sandbox
def test_daemon_config_is_unreadable(hostile: Hostile) -> None:
    def snoop(etc: str, secret: str) -> dict[str, str]:
        import os

        out = {}
        for what, act in [("list", lambda: os.listdir(etc)), ("read", lambda: open(secret).read())]:
            try:
                out[what] = repr(act())
            except OSError as e:
                out[what] = type(e).__name__
        return out

    assert SECRET in hostile.secret_file.read_text(), "the daemons' file is there and readable by them"
    status, seen = hostile.run(snoop, str(hostile.etc), str(hostile.secret_file))
    assert status == "COMPLETED"
    assert seen == {"list": "PermissionError", "read": "PermissionError"}, seen
    hostile.assert_healthy()


@needs_sandbox
def test_killing_the_daemons_is_refused(hostile: Hostile) -> None:
    def kill_all(pids: dict[str, int]) -> dict[str, str]:
        import os
        import signal

        out = {}
        for name, pid in pids.items():
            try:
                os.kill(pid, signal.SIGKILL)
                out[name] = "killed"
            except OSError as e:
                out[name] = type(e).__name__
        return out

    status, seen = hostile.run(kill_all, hostile.daemon_pids())
    assert status == "COMPLETED"
    assert set(seen.values()) <= {"PermissionError", "ProcessLookupError"}, seen
    hostile.assert_healthy()


@needs_sandbox
def test_killing_the_parent(hostile: Hostile) -> None:
    def kill_parent() -> str:
        import os
        import signal
        import time

        os.kill(os.getppid(), signal.SIGKILL)  # the zygote (fork) or the daemon (reuse)
        time.sleep(5)  # a fork-mode task dies with its zygote (parent-death signal)
        return "parent survived"

    result = hostile.run(kill_parent)
    if hostile.isolation == "fork":  # type: ignore[attr-defined]
        # The zygote is the executor user's own process: it dies, and the task with it.
        text = platform_failure(result, "ExecutorCrashed")
        assert "zygote" in text, text
    else:
        status, exc = result
        assert status == "FAILED" and isinstance(exc, PermissionError), result
    hostile.assert_healthy()  # a new zygote serves the next task


@needs_sandbox
def test_planted_modules_are_never_imported(hostile: Hostile) -> None:
    def plant(name: str) -> dict[str, str]:
        import os
        import sys

        out = {}
        for d in [os.getcwd(), *sys.path]:
            try:
                with open(os.path.join(d or ".", name + ".py"), "w") as f:
                    f.write("PWNED = True\n")
                out[d] = "written"
            except OSError as e:
                out[d] = type(e).__name__
        return out

    def victim(name: str) -> str:
        import importlib

        try:
            importlib.import_module(name)
            return "imported the planted module"
        except ImportError:
            return "not importable"

    status, written = hostile.run(plant, PLANTED)
    assert status == "COMPLETED"
    cwd, *path = list(written)
    assert written[cwd] == "written", "its private directory is writable"
    assert all(v != "written" for k, v in written.items() if k != cwd), written
    assert str(hostile.lib) in written
    for _ in range(3):
        assert hostile.run(victim, PLANTED) == ("COMPLETED", "not importable")
    leftovers = [p for p in path if p and Path(p, PLANTED + ".py").exists()]
    assert not leftovers, leftovers
    hostile.assert_healthy()


@needs_sandbox
def test_fork_bomb(hostile: Hostile) -> None:
    def bomb() -> None:
        import os

        while True:
            os.fork()

    started = time.monotonic()
    text = platform_failure(hostile.run(bomb), "ResourceLimitExceeded")
    assert "process limit of 64" in text, text
    print(f"fork bomb contained in {time.monotonic() - started:.2f} s")
    hostile.assert_healthy()


def test_allocating_past_the_memory_limit(hostile: Hostile) -> None:
    def hog() -> int:
        chunks = []
        while True:
            chunks.append(bytearray(32 << 20))

    text = platform_failure(hostile.run(hog), "ResourceLimitExceeded")
    assert "memory limit of 256 MiB" in text, text
    text = platform_failure(hostile.run(lambda: len(bytearray(64 << 30))), "ResourceLimitExceeded")
    assert "memory limit" in text, text
    hostile.assert_healthy()


def test_writing_a_huge_file(hostile: Hostile) -> None:
    def fill() -> None:
        import os

        with open(os.path.join(os.getcwd(), "huge"), "wb") as f:
            for _ in range(64):
                f.write(b"\0" * (1 << 20))

    text = platform_failure(hostile.run(fill), "ResourceLimitExceeded")
    assert "file size limit of 8 MiB" in text, text
    hostile.assert_healthy()


def test_sleeping_past_the_timeout(hostile: Hostile) -> None:
    started = time.monotonic()
    text = platform_failure(hostile.run(lambda: __import__("time").sleep(600)), "TaskTimeout")
    assert "timeout of 5 s" in text, text
    print(f"timed out after {time.monotonic() - started:.1f} s (limit 5 s)")
    hostile.assert_healthy()


@needs_sandbox
@pytest.mark.parametrize("mode", ["local", "push"])
def test_network_none_cannot_reach_redis(mode: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="faas-hostile-"))
    try:
        h = hostile_stack(base, mode, "fork", network="none")
        try:
            def reach(port: int) -> dict[str, str]:
                import socket

                out = {"interfaces": ",".join(n for _, n in socket.if_nameindex())}
                for name, addr in [("redis", ("127.0.0.1", port)), ("elsewhere", ("192.0.2.1", 80))]:
                    try:
                        socket.create_connection(addr, timeout=2).close()
                        out[name] = "connected"
                    except OSError as e:
                        out[name] = type(e).__name__
                return out

            status, seen = h.run(reach, h.stack.redis_port)
            assert status == "COMPLETED", seen
            assert seen["interfaces"] == "lo", seen
            assert seen["redis"] == "ConnectionRefusedError", seen
            assert seen["elsewhere"] in ("OSError", "TimeoutError"), seen  # ENETUNREACH
            h.assert_healthy()
        finally:
            h.stack.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_private_directories_are_removed(hostile: Hostile) -> None:
    def where() -> str:
        import os

        open("scratch", "w").write("x")
        return os.getcwd()

    status, cwd = hostile.run(where)
    assert status == "COMPLETED"
    mode = stat.S_IMODE(os.stat(cwd).st_mode) if os.path.exists(cwd) else None
    if hostile.isolation == "fork":  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while os.path.exists(cwd) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(cwd), f"{cwd} left behind"
    else:
        assert mode == 0o700, mode  # the reuse process's own directory, private to it
    hostile.assert_healthy()

