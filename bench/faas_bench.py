"""faas benchmark client: latency, throughput and weak scaling of local, pull and push modes,
and the Python SDK's targets (FaasExecutor.map throughput, submit().result() latency).

Starts real deployments (tests/python/faas_stack.py) from release binaries and drives them over
HTTP the way users do. Writes ``results.json`` (or ``sdk.json``) and PNG plots to ``--out``.

    python bench/faas_bench.py --out docs/bench            # full run (~5 min on 2 cores)
    python bench/faas_bench.py --quick --out /tmp/bench    # smoke run
    python bench/faas_bench.py --sdk --out docs/bench      # the SDK targets, 3 runs each
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

from faas_client import Client, FaasExecutor

# The deployment helper is the tests' (tests/python/faas_stack.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from faas_stack import ROOT, Stack, children  # noqa: E402

CLK_TCK = __import__("os").sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its living descendants, including reaped children's time."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    except (OSError, ValueError):
        return 0.0
    return total + sum(cpu_seconds(c) for c in children(pid))


def own_cpu(pid: int) -> float:
    """CPU time of `pid` itself (threads included, children not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:13]) / CLK_TCK  # utime stime
    except (OSError, ValueError):
        return 0.0


def component_cpu(s: Stack) -> Dict[str, float]:
    """CPU seconds per daemon of the deployment (executors count with their daemon)."""
    out: Dict[str, float] = {}
    for name, p in s.named_procs():
        out[name] = out.get(name, 0.0) + cpu_seconds(p.pid)
    return out


def noop(*_: Any) -> None:
    return None


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def shape(mode: str, processes: int, workers: int = 1) -> Dict[str, Any]:
    return {"mode": mode, "processes": processes, "workers": workers if mode != "local" else 0}


def deploy(tmp: Path, sh: Dict[str, Any], isolation: str) -> Stack:
    return Stack(
        Path(tempfile.mkdtemp(dir=tmp)),
        mode=sh["mode"],
        processes=sh["processes"],
        workers=max(sh["workers"], 1),
        executor=f'isolation = "{isolation}"',
        preload=("requests",),
    ).start()


def percentile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def redis_hmget(port: int, key: str, *fields: str) -> List[str]:
    """HMGET over a raw socket (the bench needs no Redis client library)."""
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        parts = ["HMGET", key, *fields]
        cmd = f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)
        sock.sendall(cmd.encode())
        f = sock.makefile("rb")
        assert f.readline().startswith(b"*")
        out = []
        for _ in fields:
            n = int(f.readline()[1:])
            out.append(f.read(n + 2)[:-2].decode() if n >= 0 else "")
        return out


def latency(s: Stack, n: int) -> Dict[str, float]:
    """Sequential no-op tasks. Client view: submit → result seen (Client.wait: a long-poll).
    Server view: the task's created_ms → finished_ms in Redis (ms resolution, so the mean)."""
    c = Client(s.url)
    fid = c.register(noop)
    for _ in range(10):
        c.wait(c.execute(fid))
    samples = []
    server = []
    for _ in range(n):
        t0 = time.perf_counter()
        tid = c.execute(fid)
        status, _ = c.wait(tid)
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == "COMPLETED"
        created, finished = redis_hmget(s.redis_port, f"faas:task:{tid}", "created_ms", "finished_ms")
        server.append(int(finished) - int(created))
    return {"median_ms": statistics.median(samples), "p95_ms": percentile(samples, 0.95),
            "server_mean_ms": statistics.mean(server), "n": n}


def throughput(s: Stack, n: int, clients: int) -> Dict[str, Any]:
    """`clients` threads submit `n` no-op tasks in all, then wait for every result. Also records
    the CPU seconds each component used, to show where the time goes."""
    url = s.url
    fid = Client(url).register(noop)
    cpu0 = component_cpu(s)
    client0 = sum(__import__("os").times()[:2])

    def submit(k: int) -> List[str]:
        c = Client(url)
        return [c.execute(fid) for _ in range(k)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ids = [t for chunk in pool.map(submit, [n // clients] * clients) for t in chunk]
    submitted = time.perf_counter() - t0

    def wait(chunk: List[str]) -> None:
        c = Client(url)
        for t in chunk:
            assert c.wait(t, timeout=300)[0] == "COMPLETED"

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(wait, [ids[i::clients] for i in range(clients)]))
    total = time.perf_counter() - t0
    cpu1 = component_cpu(s)
    cpu = {k: round(cpu1.get(k, 0.0) - v, 2) for k, v in cpu0.items()}
    cpu["client"] = round(sum(__import__("os").times()[:2]) - client0, 2)
    return {"tasks": len(ids), "seconds": total, "tasks_per_s": len(ids) / total,
            "submit_per_s": len(ids) / submitted, "cpu_seconds": cpu}


def weak_scaling(url: str, processes: int, per_process: int, seconds: float) -> Dict[str, float]:
    """`per_process` sleep tasks per executor process; efficiency = ideal time / actual time."""
    c = Client(url)
    fid = c.register(sleeper)
    c.wait(c.execute(fid, 0.0))
    n = processes * per_process
    t0 = time.perf_counter()
    ids = [c.execute(fid, seconds) for _ in range(n)]
    for t in ids:
        assert c.wait(t, timeout=300)[0] == "COMPLETED"
    took = time.perf_counter() - t0
    ideal = per_process * seconds
    return {"processes": processes, "tasks": n, "seconds": took, "efficiency": ideal / took}


def sdk_map(s: Stack, n: int) -> Dict[str, Any]:
    """One Python process maps a no-op over ``n`` inputs with FaasExecutor (batched submission,
    one background waiter on batch long-polls); end-to-end tasks/s and CPU per component."""
    dispatcher = s.dispatcher.pid if s.dispatcher is not None else 0
    with FaasExecutor(s.url) as ex:
        list(ex.map(noop, range(100)))  # warm-up: registration, connections, executors
        cpu0 = component_cpu(s)
        own0 = own_cpu(dispatcher)
        client0 = sum(__import__("os").times()[:2])
        t0 = time.perf_counter()
        results = list(ex.map(noop, range(n)))
        took = time.perf_counter() - t0
        cpu1 = component_cpu(s)
        own1 = own_cpu(dispatcher)
    assert len(results) == n
    cpu = {k: round(cpu1.get(k, 0.0) - v, 2) for k, v in cpu0.items()}
    # The dispatcher's figure includes its executors: split them.
    cpu["executors"] = round(cpu.get("dispatcher", 0.0) - (own1 - own0), 2)
    cpu["dispatcher"] = round(own1 - own0, 2)
    cpu["client"] = round(sum(__import__("os").times()[:2]) - client0, 2)
    return {"tasks": n, "seconds": took, "tasks_per_s": n / took, "cpu_seconds": cpu,
            "cpu_ms_per_task": {k: round(v * 1000 / n, 3) for k, v in cpu.items()}}


def sdk_latency(s: Stack, n: int) -> Dict[str, Any]:
    """Sequential ``submit(noop).result()`` with FaasExecutor; also the server-side share."""
    with FaasExecutor(s.url) as ex:
        for _ in range(20):
            ex.submit(noop).result()
        samples, server = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            f = ex.submit(noop)
            f.result()
            samples.append((time.perf_counter() - t0) * 1000)
            created, finished = redis_hmget(s.redis_port, f"faas:task:{f.task_id}", "created_ms", "finished_ms")
            server.append(int(finished) - int(created))
    return {"n": n, "median_ms": statistics.median(samples), "p95_ms": percentile(samples, 0.95),
            "server_mean_ms": statistics.mean(server)}


def run_sdk(args: argparse.Namespace) -> Dict[str, Any]:
    """The SDK targets on local mode, reuse isolation, with 2, 4 and 8 executor processes: 3
    runs each, each on a fresh deployment."""
    tmp = Path(tempfile.mkdtemp(prefix="faas-bench-"))
    n_map = 2000 if args.quick else 20_000
    n_lat = 100 if args.quick else 1000
    out: Dict[str, Any] = {"runs": [], "summary": {}, "meta": {
        "quick": args.quick, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": __import__("os").cpu_count(), "probe_before_s": machine_probe()}}
    for processes in (2, 4, 8):
        runs = []
        for run_no in range(3):
            s = deploy(tmp, shape("local", processes), "reuse")
            try:
                m = sdk_map(s, n_map)
                lat = sdk_latency(s, n_lat)
            finally:
                s.stop()
            runs.append({"processes": processes, "map": m, "latency": lat})
            print(f"{processes} processes, run {run_no + 1}: map {m['tasks_per_s']:.0f} tasks/s "
                  f"(cpu ms/task {m['cpu_ms_per_task']}); submit().result() median "
                  f"{lat['median_ms']:.3f} ms p95 {lat['p95_ms']:.3f} ms server mean "
                  f"{lat['server_mean_ms']:.2f} ms", flush=True)
        out["runs"] += runs
        out["summary"][f"{processes}_processes"] = {
            "map_tasks_per_s_median": statistics.median(r["map"]["tasks_per_s"] for r in runs),
            "latency_median_ms_median": statistics.median(r["latency"]["median_ms"] for r in runs),
            "latency_p95_ms_median": statistics.median(r["latency"]["p95_ms"] for r in runs),
        }
    out["meta"]["probe_after_s"] = machine_probe()
    print(f"medians of 3 runs: {out['summary']}")
    return out


def machine_probe() -> float:
    """Seconds for a fixed pure-Python loop: a yardstick of how fast this machine was during the run
    (shared, throttled VMs vary by 2-3x from hour to hour)."""
    t0 = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return round(time.perf_counter() - t0, 3)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="faas-bench-"))
    modes = args.modes.split(",")
    out: Dict[str, Any] = {"latency": [], "throughput": [], "scaling": [], "meta": {
        "quick": args.quick, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": __import__("os").cpu_count(), "probe_before_s": machine_probe()}}
    lat_n = 50 if args.quick else 300
    thr_n = 200 if args.quick else 2000
    for mode in modes:
        for isolation in ("fork", "reuse"):
            s = deploy(tmp, shape(mode, 2), isolation)
            try:
                lat = latency(s, lat_n)
                thr = throughput(s, thr_n, 8)
            finally:
                s.stop()
            out["latency"].append({"mode": mode, "isolation": isolation, **lat})
            out["throughput"].append({"mode": mode, "isolation": isolation, **thr})
            print(f"{mode:5} {isolation:5} latency median {lat['median_ms']:.2f} ms "
                  f"p95 {lat['p95_ms']:.2f} ms server mean {lat['server_mean_ms']:.2f} ms; throughput {thr['tasks_per_s']:.0f} tasks/s; "
                  f"cpu s {thr['cpu_seconds']}", flush=True)
    steps = [1, 2, 4] if args.quick else [1, 2, 4, 8, 16]
    for mode in modes:
        for p in steps:
            sh = shape(mode, p) if mode == "local" else shape(mode, 1, p)
            s = deploy(tmp, sh, "fork")
            try:
                r = weak_scaling(s.url, p, 5, 0.2 if args.quick else 0.5)
            finally:
                s.stop()
            out["scaling"].append({"mode": mode, **r})
            print(f"{mode:5} weak scaling {p:2} processes: {r['seconds']:.2f} s, "
                  f"efficiency {r['efficiency']:.2f}", flush=True)
    out["meta"]["probe_after_s"] = machine_probe()
    return out


def plot(results: Dict[str, Any], outdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in results["latency"]}, key=["local", "pull", "push"].index)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.38
    for ax, key, label in ((axes[0], "median_ms", "client-observed median latency (ms)"),
                           (axes[1], "server_mean_ms", "server-side mean latency (ms)"),
                           (axes[2], "tasks_per_s", "throughput (tasks/s)")):
        src = results["throughput"] if key == "tasks_per_s" else results["latency"]
        for k, iso in enumerate(("fork", "reuse")):
            vals = [next(r[key] for r in src if r["mode"] == m and r["isolation"] == iso)
                    for m in modes]
            ax.bar([i + (k - 0.5) * width for i in range(len(modes))], vals, width, label=iso)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel(label)
        ax.legend(title="isolation")
    axes[0].set_title("no-op task: HTTP submit → result seen")
    axes[1].set_title("no-op task: queued → result stored")
    axes[2].set_title("2 executor processes, 8 Python clients")
    fig.tight_layout()
    fig.savefig(outdir / "latency_throughput.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in modes:
        rows = [r for r in results["scaling"] if r["mode"] == m]
        ax.plot([r["processes"] for r in rows], [r["efficiency"] for r in rows], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("executor processes (pull/push: workers × 1)")
    ax.set_ylabel("efficiency (ideal / measured time)")
    ax.set_title("weak scaling: 5 sleep tasks per process")
    ax.legend()
    fig.tight_layout()
    fig.savefig(outdir / "weak_scaling.png", dpi=110)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="local,pull,push")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    p.add_argument("--quick", action="store_true", help="small run for a smoke test")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--sdk", action="store_true", help="only the SDK targets (writes sdk.json)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sdk:
        sdk = run_sdk(args)
        (args.out / "sdk.json").write_text(json.dumps(sdk, indent=2) + "\n")
        print(f"results in {args.out / 'sdk.json'}")
        return 0
    results = run(args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_plots:
        plot(results, args.out)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
