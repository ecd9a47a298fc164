"""Physical floors of this machine for a no-op task, measured without faas (issue #10 asks the
performance doc to show them where a target is missed).

Each floor runs the least Python a task needs in one isolation mode, with ``workers`` processes
at a time (2: the benchmark's executor processes), as fast as the machine allows:

- ``fork``: a parent forks a child per task; the child ``dill.loads`` the function and the
  arguments, calls it, ``dill.dumps`` the result into a pipe and ``os._exit``\\s; the parent
  reads it and ``waitpid``\\s — fork isolation without sockets, directories, limits or Rust.
- ``reuse``: a long-lived process per worker loads, calls and dumps in a loop, no IPC at all —
  what an executor costs before any dispatching.

``weak_floor`` is the weak-scaling stage without faas: ``5 × N`` tasks of ``sleep(0.1)`` on ``N``
processes handed out by a minimal Python parent (no Redis, gateway or dispatcher).

    .venv/bin/python bench/floors.py          # prints JSON: tasks/s per floor
    .venv/bin/python bench/floors.py weak     # prints JSON: weak-scaling efficiency floors
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
import sys
import time
from typing import Any, Callable, Dict, List

import dill


def noop(*args: Any, **kwargs: Any) -> None:
    return None


def _payloads() -> tuple[bytes, bytes]:
    return dill.dumps(noop), dill.dumps(((), {}))


def _fork_loop(fn: bytes, args: bytes, workers: int, more: Callable[[int], bool]) -> int:
    """Forks a child per task, at most ``workers`` at a time, while ``more(started)``: the child
    ``dill.loads`` the function and arguments, calls it, writes the dumped result into a pipe and
    exits; the parent reads it and reaps the child. Returns the tasks done (GC frozen first)."""
    import gc

    gc.freeze()
    running: Dict[int, int] = {}
    started = done = 0
    while True:
        while len(running) < workers and more(started):
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
            started += 1
        if not running:
            return done
        pid, _ = os.wait()
        r = running.pop(pid)
        os.read(r, 65536)
        os.close(r)
        done += 1


def fork_floor(seconds: float = 2.0, workers: int = 2) -> float:
    """Tasks/s with a fresh forked child per task, ``workers`` children at a time."""
    fn, args = _payloads()
    t0 = time.perf_counter()
    done = _fork_loop(fn, args, workers, lambda _: time.perf_counter() < t0 + seconds)
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


def _weak_reuse_child(sock: socket.socket) -> None:
    """A long-lived process: reads a task (function and arguments, dill), runs it, writes the
    dill'ed result; ends at EOF."""
    stream = sock.makefile("rb")
    while True:
        head = stream.read(8)
        if len(head) < 8:
            os._exit(0)
        nf, na = struct.unpack(">II", head)
        f = dill.loads(stream.read(nf))
        a, k = dill.loads(stream.read(na))
        out = dill.dumps(f(*a, **k))
        sock.sendall(struct.pack(">I", len(out)) + out)


def weak_floor(processes: int, iso: str = "reuse", per_process: int = 5, task_s: float = 0.1) -> float:
    """Efficiency (ideal makespan / makespan) of ``per_process`` × ``processes`` tasks of
    ``time.sleep(task_s)`` on ``processes`` processes, handed out by a minimal Python parent from
    one shared queue as processes free up: faas's weak-scaling stage without Redis, gateway or
    dispatcher. ``reuse``: long-lived processes started before the clock, one socket each;
    ``fork``: a child forked per task (GC frozen), at most ``processes`` at a time."""
    import selectors

    fn, args = dill.dumps(functools.partial(time.sleep, task_s)), dill.dumps(((), {}))
    task = struct.pack(">II", len(fn), len(args)) + fn + args
    todo = per_process * processes
    if iso == "reuse":
        sel = selectors.DefaultSelector()
        socks = []
        for _ in range(processes):
            parent, child = socket.socketpair()
            if os.fork() == 0:
                for other in [parent, *socks]:
                    other.close()  # else a sibling's EOF never comes
                _weak_reuse_child(child)
            child.close()
            socks.append(parent)
            sel.register(parent, selectors.EVENT_READ)
        t0 = time.perf_counter()
        for s in socks:
            s.sendall(task)
        sent, done = processes, 0
        while done < todo:
            for key, _ in sel.select():
                s = key.fileobj
                head = s.recv(4, socket.MSG_WAITALL)
                (n,) = struct.unpack(">I", head)
                s.recv(n, socket.MSG_WAITALL)
                done += 1
                if sent < todo:
                    s.sendall(task)
                    sent += 1
        makespan = time.perf_counter() - t0
        sel.close()
        for s in socks:
            s.close()
        for _ in socks:
            os.wait()
        return per_process * task_s / makespan
    t0 = time.perf_counter()
    _fork_loop(fn, args, processes, lambda started: started < todo)
    return per_process * task_s / (time.perf_counter() - t0)


def weak_floors(processes: tuple[int, ...] = (1, 4, 16, 64)) -> Dict[str, float]:
    return {f"{iso}-{n}": round(weak_floor(n, iso), 3) for iso in ("reuse", "fork") for n in processes}


def floors(seconds: float = 2.0, workers: int = 2) -> Dict[str, float]:
    runs: Dict[str, Callable[..., float]] = {"fork": fork_floor, "reuse": reuse_floor}
    return {name: round(f(seconds, workers), 1) for name, f in runs.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["weak"]:
        print(json.dumps(weak_floors()))
    else:
        print(json.dumps(floors(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)))
