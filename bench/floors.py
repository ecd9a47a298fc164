"""Physical floors of this machine for a no-op task, measured without faas (issue #10 asks the
performance doc to show them where a target is missed).

Each floor runs the least Python a task needs in one isolation mode, with ``workers`` processes
at a time (2: the benchmark's executor processes), as fast as the machine allows:

- ``fork``: a parent forks a child per task; the child ``dill.loads`` the function and the
  arguments, calls it, ``dill.dumps`` the result into a pipe and ``os._exit``\\s; the parent
  reads it and ``waitpid``\\s — fork isolation without sockets, directories, limits or Rust.
- ``reuse``: a long-lived process per worker loads, calls and dumps in a loop, no IPC at all —
  what an executor costs before any dispatching.

    .venv/bin/python bench/floors.py          # prints JSON: tasks/s per floor
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Dict, List

import dill


def noop(*args: Any, **kwargs: Any) -> None:
    return None


def _payloads() -> tuple[bytes, bytes]:
    return dill.dumps(noop), dill.dumps(((), {}))


def fork_floor(seconds: float = 2.0, workers: int = 2) -> float:
    """Tasks/s with a fresh forked child per task, ``workers`` children at a time."""
    import gc

    fn, args = _payloads()
    gc.freeze()
    done, running, t0 = 0, {}, time.perf_counter()
    end = t0 + seconds
    while True:
        now = time.perf_counter()
        while len(running) < workers and now < end:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                f = dill.loads(fn)
                a, k = dill.loads(args)
                os.write(w, dill.dumps(f(*a, **k)))
                os._exit(0)
            os.close(w)
            running[pid] = r
        if not running:
            break
        pid, _ = os.wait()
        r = running.pop(pid)
        os.read(r, 65536)
        os.close(r)
        done += 1
    return done / (time.perf_counter() - t0)


def _reuse_child(fn: bytes, args: bytes, seconds: float, out: int) -> None:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            f = dill.loads(fn)
            a, k = dill.loads(args)
            dill.dumps(f(*a, **k))
        n += 100
    os.write(out, str(n).encode())
    os._exit(0)


def reuse_floor(seconds: float = 2.0, workers: int = 2) -> float:
    """Tasks/s of ``workers`` processes that only unpickle, call and pickle (dill, as faas's
    executors do for non-plain values; the plain-data fast path is cheaper still)."""
    fn, args = _payloads()
    pipes: List[int] = []
    for _ in range(workers):
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            _reuse_child(fn, args, seconds, w)
        os.close(w)
        pipes.append(r)
    total = 0
    for r in pipes:
        total += int(os.read(r, 64) or b"0")
        os.close(r)
    for _ in pipes:
        os.wait()
    return total / seconds


def floors(seconds: float = 2.0, workers: int = 2) -> Dict[str, float]:
    runs: Dict[str, Callable[..., float]] = {"fork": fork_floor, "reuse": reuse_floor}
    return {name: round(f(seconds, workers), 1) for name, f in runs.items()}


if __name__ == "__main__":
    print(json.dumps(floors(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)))
