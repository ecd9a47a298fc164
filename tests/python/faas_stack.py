"""Starts a real faas deployment as processes: a private redis-server, faas-gateway,
faas-dispatcher and (pull/push) faas-workers. Used by the tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, List, Optional

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("FAAS_BIN_DIR", ROOT / "target" / "debug"))
PYTHON = os.environ.get("FAAS_TEST_PYTHON", sys.executable)
TESTS = ROOT / "tests" / "python"
# Executors can import these, like a deployment where users' modules are installed: functions
# defined in test modules are pickled by reference to their module.
IMPORTABLE = [TESTS / "importable", TESTS, ROOT / "bench"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def children(pid: int) -> List[int]:
    """Child processes of `pid`, over all its threads."""
    out: List[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


class Stack:
    """One isolated faas deployment; ``url`` is the gateway's base URL.

    ``mode`` is local, pull or push. In local mode the dispatcher runs ``processes`` executors;
    in pull and push modes ``workers`` faas-worker daemons run ``processes`` executors each.
    ``executor`` is TOML for the ``[executor]`` table of both daemons; ``dispatcher`` is TOML for
    the dispatcher's top level (e.g. ``max_retries = 1``).

    Executors run as the daemons' own user by default (``user=""``): the test interpreter need
    not be readable by another user. The hostile-function suite passes ``user``, ``python``
    (one that user can run), ``pythonpath``, ``config_dir`` (a stand-in for /etc/faas), ``env``
    (added to the daemons' environment) and ``redis_password`` (the daemons then get their Redis
    URL from ``FAAS_*_REDIS`` variables, as /etc/default/faas would give it).
    """

    def __init__(
        self,
        workdir: Path,
        mode: str = "local",
        processes: int = 4,
        workers: int = 1,
        executor: str = "",
        dispatcher: str = "",
        preload: tuple[str, ...] = ("requests", "pytest"),
        user: str = "",
        python: str = PYTHON,
        pythonpath: Optional[List[Path]] = None,
        config_dir: Optional[Path] = None,
        env: Optional[dict[str, str]] = None,
        redis_password: str = "",
    ) -> None:
        self.workdir = workdir
        self.mode = mode
        self.processes = processes
        self.worker_count = workers if mode != "local" else 0
        self.procs: List[subprocess.Popen[bytes]] = []
        self.names: List[str] = []
        self.logs: List[IO[bytes]] = []
        self.redis_port = free_port()
        self.http_port = free_port()
        self.zmq_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.redis_password = redis_password
        auth = f":{redis_password}@" if redis_password else ""
        self.redis_url = f"redis://{auth}127.0.0.1:{self.redis_port}"
        self.extra_env = dict(env or {})
        paths = ", ".join(f'"{p}"' for p in (IMPORTABLE if pythonpath is None else pythonpath))
        # Test modules import requests and pytest: preloading them in the zygote keeps forked
        # tasks from re-importing them (as an operator would preload users' heavy modules).
        modules = ", ".join(f'"{m}"' for m in preload)
        executor_table = (
            f"[executor]\npython = \"{python}\"\nuser = \"{user}\"\npythonpath = [{paths}]\n"
            f"preload = [{modules}]\n{executor}\n"
        )
        self.config_dir = config_dir or workdir / "etc"
        self.config_dir.mkdir(exist_ok=True)
        self.config = workdir / "dispatcher.toml"
        self.config.write_text(
            "heartbeat_interval_ms = 200\nheartbeat_misses = 4\ndrain_timeout_secs = 5\n"
            f"{dispatcher}\n{executor_table}"
        )
        self.worker_config = workdir / "worker.toml"
        self.worker_config.write_text(f"drain_timeout_secs = 5\n{executor_table}")
        self.dispatcher: Optional[subprocess.Popen[bytes]] = None
        self.workers: List[subprocess.Popen[bytes]] = []

    @property
    def slots(self) -> int:
        """Tasks the deployment runs at once."""
        return self.processes * max(self.worker_count, 1)

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.zmq_port}"

    def _spawn(self, name: str, args: List[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")
        self.logs.append(log)
        # An empty config directory: a host's /etc/faas drop-ins must not leak into tests.
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"),
                   FAAS_CONFIG_DIR=str(self.config_dir), **self.extra_env)
        if self.redis_password:
            env.update(FAAS_GATEWAY_REDIS=self.redis_url, FAAS_DISPATCHER_REDIS=self.redis_url)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        self.names.append(name.rstrip("0123456789"))
        return p

    def named_procs(self) -> List[tuple[str, subprocess.Popen[bytes]]]:
        """(component, process) for every daemon still running: redis, gateway, dispatcher, worker."""
        return [(n, p) for n, p in zip(self.names, self.procs) if p.poll() is None]

    def _redis_flag(self) -> List[str]:
        """``--redis URL``, unless the URL (with its password) comes from the environment."""
        return [] if self.redis_password else ["--redis", self.redis_url]

    def start(self) -> "Stack":
        password = ["--requirepass", self.redis_password] if self.redis_password else []
        self._spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir), *password],
        )
        wait_port(self.redis_port)
        self._spawn(
            "gateway",
            [str(BIN_DIR / "faas-gateway"), "--listen", f"127.0.0.1:{self.http_port}",
             *self._redis_flag()],
        )
        self.start_dispatcher()
        for _ in range(self.worker_count):
            self.start_worker()
        wait_port(self.http_port)
        return self

    def start_dispatcher(self) -> subprocess.Popen[bytes]:
        args = [str(BIN_DIR / "faas-dispatcher"), "-m", self.mode, *self._redis_flag(),
                "--config", str(self.config), "--name", f"test-{self.redis_port}"]
        if self.mode == "local":
            args += ["-w", str(self.processes)]
        else:
            args += ["-p", str(self.zmq_port)]
        self.dispatcher = self._spawn("dispatcher", args)
        return self.dispatcher

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Starts one more worker (pull and push modes)."""
        n = len(self.workers)
        w = self._spawn(
            f"worker{n}",
            [str(BIN_DIR / "faas-worker"), self.mode, str(self.processes), self.endpoint,
             "--config", str(self.worker_config), "--id", f"w{n}-{self.redis_port}"],
        )
        self.workers.append(w)
        return w

    def worker_running_a_task(self, timeout: float = 10.0) -> int:
        """Index of a worker whose executor has a task process (worker → zygote → task)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, w in enumerate(self.workers):
                if w.poll() is None and any(children(z) for z in children(w.pid)):
                    return i
            time.sleep(0.02)
        raise AssertionError("no worker is running a task")

    def stop_dispatcher(self, sig: int = signal.SIGTERM) -> None:
        if self.dispatcher is not None:
            self.dispatcher.send_signal(sig)
            self.dispatcher.wait(timeout=60)
            self.dispatcher = None

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stops the daemons in reverse start order (Redis last, so they can drain)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a test may have stopped it
                p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()
