"""Server throughput with the Rust load generator (faas-loadgen): the stages of issue #10.

Starts real deployments (tests/python/faas_stack.py) from release binaries, drives them with
``faas-loadgen`` and writes every run's JSON report, the machine yardstick and the medians to
``--out`` (``server.json``). Stages, each ``--runs`` times on a fresh deployment (no-op function,
2 executor processes; pull/push: one worker with 2):

- ``accept``: tasks submitted as fast as possible while no dispatcher runs (gateway + Redis);
  ``accept-2-threads`` the same with two generator threads (a check that it is not the limit).
- ``result``: ``GET /result`` as fast as possible on completed tasks.
- ``drain-<mode>-<isolation>``: a full queue submitted while no dispatcher runs; the harness
  starts the dispatcher (and worker) and the generator times until every task is terminal.
- ``closed-local-reuse``: closed loop, submit + collect with ``--outstanding`` tasks in flight;
  ``closed-local-reuse-128`` the same with 128.
- ``weak-<mode>-<isolation>-<N>``: weak scaling, ``N`` executor processes (1, 4, 16, 64; push: one
  worker with N), 5 × ``sleep(0.1)`` tasks per process submitted to a running deployment; the
  makespan runs from the first submit to the last task's ``finished_ms``; efficiency = 0.5 s /
  makespan.

    scripts/bench-server.sh                       # full run, results in docs/bench/server.json
    cd bench && FAAS_BIN_DIR=../target/release ../.venv/bin/python faas_serverbench.py --quick --out /tmp/sb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from faas_bench import machine_probe
from floors import floors
from faas_stack import BIN_DIR, PYTHON, ROOT, Stack, children, free_port, stop_all, wait_port

LOADGEN = BIN_DIR / "faas-loadgen"
Report = Dict[str, Any]


class ServerStack(Stack):
    """A Stack whose dispatcher (and workers) start only when asked: ``start_backend``."""

    def __init__(self, workdir: Path, mode: str, isolation: str, backend: bool,
                 processes: int = 2, prefetch: Optional[int] = None) -> None:
        table = f'isolation = "{isolation}"'
        if prefetch is not None:  # older binaries do not know the key: leave it out by default
            table += f"\nprefetch = {prefetch}"
        super().__init__(workdir, mode=mode, processes=processes, workers=1,
                         executor=table, preload=())
        self.backend = backend

    def start_dispatcher(self) -> Any:
        return super().start_dispatcher() if self.backend else None

    def start_worker(self) -> Any:
        return super().start_worker() if self.backend else None

    def start_backend(self, then: Callable[[], None] = lambda: None) -> None:
        """Starts the dispatcher, calls ``then`` (the go signal), then starts the workers."""
        self.backend = True
        self.start_dispatcher()
        then()
        for _ in range(self.worker_count):
            self.start_worker()

    def cpu_args(self) -> List[str]:
        """``--cpu`` selectors for every component (patterns unique to this deployment)."""
        procs = dict((n, p) for n, p in self.named_procs() if n in ("redis", "gateway"))
        args = [f"redis={procs['redis'].pid}", f"gateway={procs['gateway'].pid}",
                f"dispatcher=--name test-{self.redis_port}"]
        if self.mode != "local":
            args.append(f"worker={self.endpoint} --config")
        return [a for sel in args for a in ("--cpu", sel)]


class PeerStack:
    """The Python implementation of the same specification (bench/pyfaas.py): a private
    redis-server, its FastAPI gateway on uvicorn and (``backend``) its local dispatcher with a
    pool of 2 processes. Offers what :func:`loadgen` needs of a deployment."""

    mode = "peer"

    def __init__(self, workdir: Path, backend: bool) -> None:
        self.workdir, self.backend = workdir, backend
        self.redis_port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}"
        self.procs: List[Any] = []
        self.logs: List[Any] = []

    def _spawn(self, name: str, args: List[str]) -> Any:
        log = open(self.workdir / f"{name}.log", "ab")
        self.logs.append(log)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent)
        self.procs.append(p)
        return p

    def start(self) -> "PeerStack":
        self.redis = self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                                           "127.0.0.1", "--save", "", "--appendonly", "no"])
        wait_port(self.redis_port)
        self.gateway = self._spawn("gateway", [PYTHON, "pyfaas.py", "gateway", str(self.http_port),
                                               self.redis_url])
        wait_port(self.http_port, timeout=30)
        if self.backend:
            self._spawn("dispatcher", [PYTHON, "pyfaas.py", "dispatcher", "2", self.redis_url])
            time.sleep(1.0)  # its pool is up and subscribed (nothing is queued before it anyway)
        return self

    def cpu_args(self) -> List[str]:
        sels = [f"redis={self.redis.pid}", f"gateway={self.gateway.pid}",
                f"dispatcher=pyfaas.py dispatcher 2 {self.redis_url}"]
        return [a for sel in sels for a in ("--cpu", sel)]

    def stop(self) -> None:
        stop_all(self.procs, self.logs, 5)


def loadgen(s: Any, mode_args: List[str], common: List[str], stdin_go: Optional[ServerStack] = None,
            perf: Optional[Path] = None) -> Report:
    """Runs faas-loadgen against ``s``; for a drain (``stdin_go``) starts the backend on READY."""
    out = Path(tempfile.mkstemp(prefix="loadgen-", suffix=".json", dir=s.workdir)[1])
    cmd = [str(LOADGEN), "--url", s.url, "--python", PYTHON, "--out", str(out), *common,
           *s.cpu_args(), *mode_args]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    recorder = None
    try:
        if stdin_go is not None:
            assert p.stdout is not None and p.stdin is not None
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"faas-loadgen did not get ready: {line!r}")
            if perf is not None:
                recorder = start_perf(perf)

            def go() -> None:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()

            stdin_go.start_backend(then=go)
        p.communicate(timeout=1800)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if recorder is not None:
            stop_perf(recorder)
    if p.returncode != 0:
        raise RuntimeError(f"faas-loadgen failed ({p.returncode}): {' '.join(cmd)}")
    return json.loads(out.read_text())


def start_perf(data: Path) -> subprocess.Popen[bytes]:
    """System-wide CPU-clock sampling (no hardware counters on this VM) with call graphs."""
    p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-a", "-g",
                          "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf needs a moment to set up its ring buffers
    return p


def stop_perf(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)


# Where a sample's symbol belongs, first match wins (user-space symbols; [k] is the kernel).
CATEGORIES = [
    ("allocator (malloc/free)", ("malloc", "free", "_int_", "unlink_chunk", "realloc", "jemalloc")),
    ("tokio runtime", ("tokio::", "parking_lot", "mio::")),
    ("redis client (RESP)", ("redis::", "combine::")),
    ("zeromq", ("zeromq::",)),
    ("logging and formatting", ("tracing", "core::fmt", "itoa", "fmt::")),
    ("serde_json", ("serde_json",)),
    ("faas code", ("faas::",)),
    ("python interpreter", ("libpython", "_Py", "Py")),
]


def categorize(rows: List[tuple]) -> Dict[str, float]:
    """Sums (percent, dso, kind, symbol) samples per category."""
    out: Dict[str, float] = {}
    for pct, dso, kind, sym in rows:
        if kind == "k":
            cat = "kernel (syscalls, scheduling, network)"
        else:
            cat = next((c for c, keys in CATEGORIES if any(k in sym or k in dso for k in keys)),
                       f"other in {Path(dso).name}")
        out[cat] = out.get(cat, 0.0) + pct
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def perf_summary(data: Path, pids: Dict[str, List[int]], out: Path) -> None:
    """Text reports of a system-wide perf recording, restricted to this deployment's processes
    (the machine is shared): CPU by process, then per component its samples by category and its
    hottest symbols (self time; no call graphs: the release binaries have no frame pointers)."""
    def report(who: List[int], *args: str) -> str:
        r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
                            "--percentage", "relative", "--pid", ",".join(map(str, who)), *args],
                           capture_output=True, text=True)
        return "\n".join(line for line in r.stdout.splitlines() if line and not line.startswith("#"))

    def rows(who: List[int]) -> List[tuple]:
        out = []
        for line in report(who, "--sort", "dso,sym", "--percent-limit", "0").splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
            if m:
                out.append((float(m[1]), m[2], m[3], m[4].strip()))
        return out

    ours = [p for ps in pids.values() for p in ps]
    parts = [f"# processes: {json.dumps(pids)}\n",
             "\n# CPU samples by thread (cpu-clock, % of this deployment's samples)\n",
             report(ours, "--sort", "pid", "--percent-limit", "0.5")]
    for name, who in pids.items():
        samples = rows(who) if who else []
        if not samples:
            continue
        parts += [f"\n\n# {name}: samples by category (% of its samples)\n",
                  "\n".join(f"{v:8.2f}%  {c}" for c, v in categorize(samples).items()),
                  f"\n\n# {name}: hottest symbols (self time, % of its samples)\n",
                  "\n".join(f"{pct:8.2f}%  {Path(dso).name:28} [{kind}] {sym}"
                            for pct, dso, kind, sym in samples[:30])]
    out.write_text("\n".join(parts) + "\n")


def component_pids(s: ServerStack) -> Dict[str, List[int]]:
    """Pids per component of a running deployment (executors: the descendants of the dispatcher
    and of the worker)."""
    procs = dict(s.named_procs())
    out = {n: [procs[n].pid] for n in ("dispatcher", "worker", "redis", "gateway") if n in procs}
    todo, execs = out.get("dispatcher", []) + out.get("worker", []), []
    while todo:
        kids = children(todo.pop())
        execs += kids
        todo += kids
    out["executors"] = execs
    return out


def median(xs: List[float], digits: int = 1) -> float:
    return round(statistics.median(xs), digits)


def phase(r: Report, name: str) -> Dict[str, Any]:
    return next(p for p in r["phases"] if p["name"] == name)


# Weak scaling: executor processes per point, the task each process runs 5 times, and the
# makespan of 5 such tasks run back to back (the ideal).
WEAK_PROCESSES = (1, 4, 16, 64)
WEAK_TASK_S = 0.1
WEAK_IDEAL_S = 5 * WEAK_TASK_S

# What issue #10 asks of each stage (tasks/s; weak scaling: efficiency at 64 processes).
TARGETS = {"accept": 30000, "peer-accept": 30000, "peer-closed": 8000, "drain-local-reuse": 15000, "drain-pull-reuse": 10000,
           "drain-push-reuse": 10000, "drain-local-fork": 700, "drain-push-fork": 700,
           "closed-local-reuse": 8000, "closed-local-reuse-128": 8000}
WEAK_TARGETS = {"reuse": 0.95, "fork": 0.90}


def sleep_function_file(dest: Path) -> Path:
    """A base64 dill pickle (as faas-loadgen's --function-file wants) of a function that sleeps
    WEAK_TASK_S seconds, made by the executors' Python (which has dill)."""
    code = ("import codecs, dill, sys\n"
            "def sleep_task(*args, **kwargs):\n"
            "    import time\n"
            f"    time.sleep({WEAK_TASK_S})\n"
            "sys.stdout.write(codecs.encode(dill.dumps(sleep_task), 'base64').decode())\n")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout
    dest.write_text(out)
    return dest


# stage → (mode, isolation, dispatcher running at start, how to run faas-loadgen, metric)
def stages(quick: bool, outstanding: int) -> Dict[str, Dict[str, Any]]:
    k = 10 if quick else 1
    drain = {"local-reuse": 20000, "pull-reuse": 10000, "push-reuse": 10000,
             "local-fork": 3000, "push-fork": 3000}
    out: Dict[str, Dict[str, Any]] = {
        "accept": {"mode": "local", "iso": "reuse", "backend": False,
                   "args": ["-c", "64", "submit", "--tasks", str(100000 // k)], "phase": "submit"},
        # The same with a second generator thread: if the generator were the bottleneck, the
        # rate would rise.
        "accept-2-threads": {"mode": "local", "iso": "reuse", "backend": False, "phase": "submit",
                             "args": ["-c", "64", "--threads", "2", "submit", "--tasks", str(100000 // k)]},
        "result": {"mode": "local", "iso": "reuse", "backend": True,
                   "args": ["-c", "64", "read", "--tasks", "1000", "--requests", str(100000 // k)],
                   "phase": "read"},
    }
    for name, n in drain.items():
        mode, iso = name.split("-")
        out[f"drain-{name}"] = {"mode": mode, "iso": iso, "backend": False, "drain": True,
                                "args": ["-c", "64", "drain", "--tasks", str(n // k)], "phase": "drain"}
    for mode, iso in (("local", "reuse"), ("local", "fork"), ("push", "reuse")):
        for n in WEAK_PROCESSES:
            out[f"weak-{mode}-{iso}-{n}"] = {
                "mode": mode, "iso": iso, "backend": True, "drain": True, "weak": n,
                "processes": n, "phase": "drain",
                "args": ["-c", str(min(5 * n, 64)), "drain", "--tasks", str(5 * n), "--go", "now"]}
    # The Python implementation of the same specification (bench/pyfaas.py): what it accepts,
    # and end to end with polling (it has no long poll, and no queue a drain could time).
    out["peer-accept"] = {"peer": True, "backend": False, "phase": "submit",
                          "args": ["-c", "64", "submit", "--tasks", str(10000 // k)]}
    out["peer-closed"] = {"peer": True, "backend": True, "phase": "closed",
                          "args": ["-c", str(outstanding), "closed", "--poll-interval-ms", "2",
                                   "--duration", "2" if quick else "10",
                                   "--warmup", "0.5" if quick else "2"]}
    # The closed loop with --outstanding tasks in flight, and with 128 (deep batches need more
    # tasks in flight than 32 can give them).
    for stage, n in (("closed-local-reuse", outstanding), ("closed-local-reuse-128", 128)):
        out[stage] = {
            "mode": "local", "iso": "reuse", "backend": True, "phase": "closed",
            "args": ["-c", str(n), "closed", "--poll-interval-ms", "2",
                     "--duration", "2" if quick else "10",
                     "--warmup", "0.5" if quick else "2"]}
    return out


def run_stage(name: str, st: Dict[str, Any], tmp: Path, perf: Optional[Path] = None,
              prefetch: Optional[int] = None) -> Report:
    """One run of a stage on a fresh deployment (``prefetch``: the daemons' executor.prefetch);
    with ``perf`` (drains only) the drain is profiled and its text report written next to
    ``perf`` as .txt."""
    if st.get("peer"):
        peer = PeerStack(Path(tempfile.mkdtemp(dir=tmp)), st["backend"]).start()
        try:
            return loadgen(peer, list(st["args"]), [])
        finally:
            peer.stop()
    s = ServerStack(Path(tempfile.mkdtemp(dir=tmp)), st["mode"], st["iso"], st["backend"],
                    processes=st.get("processes", 2), prefetch=prefetch).start()
    try:
        args = list(st["args"])
        if st.get("weak"):
            fn = sleep_function_file(s.workdir / "sleep.b64")
            return loadgen(s, args + ["--redis", s.redis_url], ["--function-file", str(fn)])
        if not st.get("drain"):
            return loadgen(s, args, [])
        rep = loadgen(s, args + ["--redis", s.redis_url], [], stdin_go=s, perf=perf)
        if perf is not None:
            perf_summary(perf, component_pids(s), perf.with_suffix(".txt"))
        return rep
    finally:
        s.stop()


def base(name: str) -> str:
    """A stage's name without the variant tag (``drain-local-reuse [prefetch 1]``)."""
    return name.split(" [")[0]


def weak_makespan_s(r: Report) -> float:
    """First submit → last task finished: the fill (submit phase) plus go → last finish."""
    return phase(r, "submit")["seconds"] + phase(r, "drain")["drain"]["last_finished_after_go_ms"] / 1000


def headline(name: str, r: Report) -> float:
    """The stage's number: tasks/s, or for weak scaling the efficiency."""
    if name.startswith("weak-"):
        return round(WEAK_IDEAL_S / weak_makespan_s(r), 3)
    p = phase(r, stages(False, 1)[base(name)]["phase"])
    return float(p["drain"]["per_s_from_go"] if p.get("drain") else p["ops_per_s"])


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["stage"] for r in runs):
        rs = [r for r in runs if r["stage"] == name]
        ph = [phase(r["report"], stages(False, 1)[base(name)]["phase"]) for r in rs]
        row: Dict[str, Any] = {
            "stage": name,
            "per_s": [headline(name, r["report"]) for r in rs],
            "median_per_s": median([headline(name, r["report"]) for r in rs],
                                   3 if name.startswith("weak-") else 1),
            "target": TARGETS.get(base(name), WEAK_TARGETS.get(name.split("-")[2])
                                  if name.startswith("weak-") else None),
            "server_cpu_ms_per_op": median([p["cpu_ms_per_op"]["server"] for p in ph], 4),
            "loadgen_cpu_ms_per_op": median([p["cpu_ms_per_op"]["loadgen"] for p in ph], 4),
            "cpu_ms_per_op": {c: median([p["cpu_ms_per_op"][c] for p in ph], 4)
                              for c in ph[0]["cpu_ms_per_op"]},
            # [own, children] ms per op: a daemon's own threads, and its executors.
            "cpu_own_children_ms_per_op": {
                c: [median([1000 * p["cpu"]["components"][c][k] / max(p["ops"], 1) for p in ph], 4)
                    for k in ("own_s", "children_s")]
                for c in ph[0]["cpu"]["components"]},
            "loadgen_cores": median([p["cpu"]["loadgen_cores"] for p in ph], 3),
            "server_cores": median([p["cpu"]["server_cores"] for p in ph], 3),
            "errors": sum(p["errors"] for p in ph),
            "probe_s": [[r["probe_before_s"], r["probe_after_s"]] for r in rs],
            "loadavg_1m": [r["report"]["meta"]["loadavg_start"][0] for r in rs],
        }
        if ph[0].get("drain"):
            row["median_per_s_running"] = median([p["drain"]["per_s_running"] for p in ph])
            row["median_startup_ms"] = median([p["drain"]["first_started_after_go_ms"] for p in ph])
            row["median_accept_per_s"] = median([phase(r["report"], "submit")["ops_per_s"] for r in rs])
        if ph[0].get("latency_us"):
            row["median_p50_us"] = median([p["latency_us"]["p50_us"] for p in ph])
            row["median_p99_us"] = median([p["latency_us"]["p99_us"] for p in ph])
        out.append(row)
    return out


def table(summary: List[Dict[str, Any]]) -> str:
    lines = ["| stage | median /s (runs) | server CPU ms/op | generator CPU ms/op | generator cores |",
             "|---|---|---|---|---|"]
    for r in summary:
        fmt = "{:.3f}" if r["stage"].startswith("weak-") else "{:,.0f}"
        runs = ", ".join(fmt.format(v) for v in r["per_s"])
        lines.append(f"| {r['stage']} | {fmt.format(r['median_per_s'])} ({runs}) | {r['server_cpu_ms_per_op']} | "
                     f"{r['loadgen_cpu_ms_per_op']} | {r['loadgen_cores']} |")
    return "\n".join(lines)


def plots(summary: List[Dict[str, Any]], out: Path) -> None:
    """throughput.png (stage medians against issue #10's targets) and weak_scaling_server.png
    (efficiency per process count), from the summary of this run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r for r in summary if base(r["stage"]) in TARGETS]
    if rates:
        fig, ax = plt.subplots(figsize=(8, 1.5 + 0.22 * len(rates)))
        names = [r["stage"] for r in rates]
        ax.barh(names, [r["median_per_s"] for r in rates], color="tab:blue", label="median of runs")
        for i, r in enumerate(rates):
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="tab:red",
                    label="target (issue #10)" if i == 0 else None)
            ax.text(r["median_per_s"], i, f" {r['median_per_s']:,.0f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("tasks/s (log scale)")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("faas server throughput (no-op tasks, 2 executor processes, 2 cores)")
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
    weak = [r for r in summary if r["stage"].startswith("weak-")]
    if weak:
        fig, ax = plt.subplots(figsize=(7, 4))
        series: Dict[str, List[tuple]] = {}
        for r in weak:
            _, mode, iso, n = base(r["stage"]).split("-")
            tag = r["stage"][len(base(r["stage"])):]
            series.setdefault(f"{mode} {iso}{tag}", []).append((int(n), r["median_per_s"]))
        for label, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        for iso, t in WEAK_TARGETS.items():
            ax.axhline(t, linestyle=":", color="gray")
            ax.text(1, t, f" target {iso} {t}", fontsize=7, va="bottom", color="gray")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("executor processes (5 × sleep 0.1 s tasks each)")
        ax.set_ylabel("efficiency (0.5 s / makespan)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title("faas weak scaling on 2 cores")
        fig.tight_layout()
        fig.savefig(out / "weak_scaling_server.png", dpi=110)
        plt.close(fig)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    p.add_argument("--runs", type=int, default=3, help="runs per stage (0 with --perf: profile only)")
    p.add_argument("--stages", default="", help="comma-separated subset (default: all)")
    p.add_argument("--outstanding", type=int, default=32, help="tasks in flight in the closed loop")
    p.add_argument("--quick", action="store_true", help="a tenth of the tasks, short closed loop")
    p.add_argument("--prefetch", type=int, default=None,
                   help="executor.prefetch of the daemons (default: not set, the build's default)")
    p.add_argument("--tag", default="", help="a variant label appended to stage names: 'stage [TAG]'")
    p.add_argument("--append", action="store_true",
                   help="add these runs to --out's server.json (the summary covers all of them)")
    p.add_argument("--perf", action="store_true",
                   help="also profile one drain with perf (perf-STAGE[-TAG].txt, .json)")
    p.add_argument("--perf-stage", default="drain-local-reuse", help="the drain --perf profiles")
    args = p.parse_args(argv)
    if not LOADGEN.exists():
        sys.exit(f"{LOADGEN} missing: cargo build --release --workspace --bins")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="faas-serverbench-"))
    all_stages = stages(args.quick, args.outstanding)
    chosen = [s for s in args.stages.split(",") if s] or list(all_stages)
    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "bin_dir": str(BIN_DIR),
            "kernel": platform.release(), "quick": args.quick, "runs": args.runs,
            "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()}
    meta["prefetch"], meta["tag"] = args.prefetch, args.tag
    # The machine's floors for a no-op task (bench/floors.py), before the stages run.
    meta["floors_per_s"] = floors()
    runs: List[Dict[str, Any]] = []
    old = args.out / "server.json"
    if args.append and old.exists():
        prev = json.loads(old.read_text())
        runs = prev["runs"]
        meta = {"variants": prev["meta"].get("variants", [prev["meta"]]) + [meta]}
    tag = f" [{args.tag}]" if args.tag else ""
    for name in chosen:
        for k in range(args.runs):
            before = machine_probe()
            rep = run_stage(name, all_stages[name], tmp, prefetch=args.prefetch)
            runs.append({"stage": name + tag, "run": k, "probe_before_s": before,
                         "probe_after_s": machine_probe(), "report": rep})
            print(f"{name + tag:32} run {k}: {headline(name, rep):10,.3f}  load {rep['meta']['loadavg_start'][0]:.2f}  "
                  f"probe {before:.2f}/{runs[-1]['probe_after_s']:.2f}", flush=True)
    if runs:
        summary = summarize(runs)
        result = {"meta": meta, "summary": summary, "runs": runs}
        (args.out / "server.json").write_text(json.dumps(result, indent=1) + "\n")
        print(table(summary))
        plots(summary, args.out)
    if args.perf:
        name = args.perf_stage
        data = tmp / f"perf-{name}.data"
        rep = run_stage(name, all_stages[name], tmp, perf=data, prefetch=args.prefetch)
        # The variant's tag in the file name: perf-drain-local-reuse-prefetch-64.txt.
        stem = f"perf-{name}" + (f"-{args.tag.replace(' ', '-')}" if args.tag else "")
        (args.out / f"{stem}.txt").write_text(data.with_suffix(".txt").read_text())
        rep["machine"] = {"probe_s": machine_probe(), **meta}
        (args.out / f"{stem}.json").write_text(json.dumps(rep, indent=1) + "\n")
        print(f"profiled drain: {headline(name, rep):,.0f}/s", flush=True)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
