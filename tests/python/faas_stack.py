"""Starts a real faas deployment as processes: a private redis-server, faas-gateway,
faas-dispatcher and (pull/push) faas-workers. Used by the tests and the benchmark.

For fault tests, Redis can keep an append-only file, be killed and restarted on its port, or be
a Sentinel-managed primary and replica (:class:`Sentinels`)."""

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


def runs_a_task(pid: int) -> bool:
    """``pid`` is a forked task process (title ``faas-executor: task ID``), not the zygote's
    spare child waiting for a task (``faas-executor: spare``, or the zygote's title until it has
    set its own)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"faas-executor: task ")
    except OSError:
        return False


def children(pid: int) -> List[int]:
    """Child processes of `pid`, over all its threads."""
    out: List[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def stop_all(procs: List["subprocess.Popen[bytes]"], logs: List[IO[bytes]], timeout: float) -> None:
    """Stops ``procs`` in order (SIGTERM, SIGKILL after ``timeout``) and closes ``logs``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a test may have stopped it
            p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for log in logs:
        log.close()


class Stack:
    """One isolated faas deployment; ``url`` is the gateway's base URL.

    ``mode`` is local, pull or push. In local mode the dispatcher runs ``processes`` executors;
    in pull and push modes ``workers`` faas-worker daemons run ``processes`` executors each.
    ``executor`` is TOML for the ``[executor]`` table of both daemons; ``dispatcher`` is TOML for
    the dispatcher's top level (e.g. ``max_retries = 1``), ``worker`` for the workers' (e.g.
    ``token_file = "..."``), ``gateway`` for the gateway's (given with ``--config``). ``redis_aof`` gives the private redis-server an append-only file (a
    restart keeps the data); ``redis_url`` uses that Redis (e.g. a ``redis+sentinel://`` URL)
    instead of a private one.

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
        gateway: str = "",
        redis_aof: bool = False,
        redis_url: Optional[str] = None,
        worker: str = "",
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
        self.own_redis = redis_url is None
        self.redis_aof = redis_aof
        self.redis_url = redis_url or f"redis://{auth}127.0.0.1:{self.redis_port}"
        self.redis: Optional[subprocess.Popen[bytes]] = None
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
        self.worker_config.write_text(f"drain_timeout_secs = 5\n{worker}\n{executor_table}")
        self.gateway_config: Optional[Path] = None
        if gateway:
            self.gateway_config = workdir / "gateway.toml"
            self.gateway_config.write_text(gateway)
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
        if self.own_redis:
            self.start_redis()
        self._spawn(
            "gateway",
            [str(BIN_DIR / "faas-gateway"), "--listen", f"127.0.0.1:{self.http_port}",
             *self._redis_flag(), *(["--config", str(self.gateway_config)] if self.gateway_config else [])],
        )
        self.start_dispatcher()
        for _ in range(self.worker_count):
            self.start_worker()
        wait_port(self.http_port)
        return self

    def start_redis(self) -> subprocess.Popen[bytes]:
        """Starts the private redis-server (again) on its port, with the data of its directory
        when it keeps an append-only file."""
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.redis_aof else [
            "--appendonly", "no"]
        password = ["--requirepass", self.redis_password] if self.redis_password else []
        self.redis = self._spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", *aof, "--dir", str(self.workdir), *password],
        )
        wait_port(self.redis_port)
        return self.redis

    def kill_redis(self) -> None:
        """kill -9 of the private redis-server: what a crash does."""
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    def redis_cli(self, *args: str, port: Optional[int] = None) -> str:
        """Runs a command with redis-cli against the private Redis (or ``port``)."""
        auth = ["-a", self.redis_password, "--no-auth-warning"] if self.redis_password else []
        out = subprocess.run(
            ["redis-cli", "-p", str(port or self.redis_port), *auth, *args],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()

    def start_dispatcher(self) -> subprocess.Popen[bytes]:
        args = [str(BIN_DIR / "faas-dispatcher"), "-m", self.mode, *self._redis_flag(),
                "--config", str(self.config), "--name", f"test-{self.redis_port}"]
        if self.mode == "local":
            args += ["-w", str(self.processes)]
        else:
            args += ["-p", str(self.zmq_port)]
        self.dispatcher = self._spawn("dispatcher", args)
        return self.dispatcher

    def start_worker(self, endpoint: Optional[str] = None) -> subprocess.Popen[bytes]:
        """Starts one more worker (pull and push modes), connecting to ``endpoint`` (e.g. a
        relay) instead of the dispatcher's own when given."""
        n = len(self.workers)
        w = self._spawn(
            f"worker{n}",
            [str(BIN_DIR / "faas-worker"), self.mode, str(self.processes), endpoint or self.endpoint,
             "--config", str(self.worker_config), "--id", f"w{n}-{self.redis_port}"],
        )
        self.workers.append(w)
        return w

    def worker_running_a_task(self, timeout: float = 10.0) -> int:
        """Index of a worker whose executor has a task process (worker → zygote → task)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, w in enumerate(self.workers):
                if w.poll() is None and any(runs_a_task(t) for z in children(w.pid) for t in children(z)):
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
        stop_all(list(reversed(self.procs)), self.logs, timeout=60)

class Sentinels:
    """A Redis primary, one replica and three Sentinels (redis-server --sentinel) on loopback
    ports, for failover tests. ``url`` is the ``redis+sentinel://`` URL the daemons use.

    ``DOWN_AFTER_MS`` is 3000, not 1000. At a failover's end each Sentinel resets its record of
    the new primary and counts it down unless a PONG arrives within down-after of that reset,
    though Sentinel paces reconnects at 1 s; the failover's "down" votes stay valid for 5 s and
    the reset allows a new failover at once. With 1000 ms one late PONG made a single Sentinel
    start a second failover, which promoted the old primary (back as a replica by then) and
    flushed what only the new one had. 3000 ms leaves two seconds of slack; a failover takes
    about 4.4 s instead of 2.4 s. The same configuration as ``tests/util/redis.rs``."""

    MASTER = "faas"
    DOWN_AFTER_MS = 3000
    FAILOVER_TIMEOUT_MS = 5000

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {"a": free_port(), "b": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: List[IO[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.MASTER}"

    def _spawn(self, name: str, args: List[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")
        self.logs.append(log)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def start_node(self, name: str, replica_of: Optional[int] = None) -> None:
        """Starts Redis node ``name`` (a or b), as a replica of the node on ``replica_of``."""
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        # No 5 s pause before a replica's full sync (Redis' default for diskless syncs).
        self._spawn(name, ["redis-server", "--port", str(self.ports[name]), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                           "--dir", str(d), *extra])
        wait_port(self.ports[name])

    def start(self, timeout: float = 30.0) -> "Sentinels":
        self.start_node("a")
        self.start_node("b", replica_of=self.ports["a"])
        for i, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.ports['a']} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.MASTER} {self.FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
            )
            self._spawn(f"sentinel{i}", ["redis-server", str(conf), "--sentinel"])
            wait_port(port)
        self.wait_ready(timeout)
        return self

    def _cli(self, port: int, *args: str) -> List[str]:
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.split()

    def master_info(self, sentinel_port: int) -> dict[str, str]:
        flat = self._cli(sentinel_port, "SENTINEL", "MASTER", self.MASTER)
        return dict(zip(flat[::2], flat[1::2]))

    def wait_ready(self, timeout: float) -> None:
        """Until every Sentinel knows the other two and a replica whose link is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [self.master_info(p) for p in self.sentinel_ports]
            if all(i.get("num-other-sentinels") == "2" and i.get("num-slaves") == "1"
                   for i in infos) and "master_link_status:up" in " ".join(
                       self._cli(self.replica_port(), "INFO", "replication")):
                return
            time.sleep(0.2)
        raise TimeoutError("the Sentinels did not find each other and the replica in time")

    def named_primary(self, sentinel_port: int) -> Optional[int]:
        """The primary's port as the Sentinel on ``sentinel_port`` names it (None: no answer)."""
        addr = self._cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", self.MASTER)
        return int(addr[1]) if len(addr) == 2 else None

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers names it."""
        for p in self.sentinel_ports:
            port = self.named_primary(p)
            if port is not None:
                return port
        raise RuntimeError("no Sentinel names a primary")

    def replica_port(self) -> int:
        return self.ports["b"] if self.primary_port() == self.ports["a"] else self.ports["a"]

    def node(self, port: int) -> str:
        return next(n for n, p in self.ports.items() if p == port)

    def fail_primary(self) -> str:
        """kill -9 of the primary; returns its node name."""
        name = self.node(self.primary_port())
        self.procs[name].kill()
        self.procs[name].wait()
        return name

    def wait_failover(self, old: str, timeout: float = 30.0) -> float:
        """Until the Sentinels name another primary that answers as one; returns the time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.primary_port()
                if port != self.ports[old] and "role:master" in " ".join(
                        self._cli(port, "INFO", "replication")):
                    return time.time()
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise TimeoutError("no failover")

    def wait_agreed(self, timeout: float = 30.0) -> int:
        """Until every Sentinel names the same primary and no failover is under way; returns its
        port. A node restarted before that may meet a Sentinel still in the old configuration."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = [self.named_primary(p) for p in self.sentinel_ports]
            busy = any("failover_in_progress" in self.master_info(p).get("flags", "")
                       for p in self.sentinel_ports)
            first = named[0]
            if first is not None and named.count(first) == len(named) and not busy:
                return first
            time.sleep(0.05)
        raise TimeoutError("the Sentinels do not agree on a primary")

    def failovers(self) -> int:
        """Failovers so far: the most ``+switch-master`` events one Sentinel has logged."""
        return max((self.workdir / f"sentinel{i}.log").read_text(errors="replace")
                   .count("+switch-master") for i in range(len(self.sentinel_ports)))

    def stop(self) -> None:
        stop_all(list(self.procs.values()), self.logs, timeout=10)
