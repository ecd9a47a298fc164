"""Functions pickled *by reference*: importable by the client (tests dir) and by executors
(the test stack adds this directory to the executor's ``pythonpath``)."""

from __future__ import annotations


def add(a: int, b: int = 0) -> int:
    return a + b


class Boom(Exception):
    """A user exception defined in an importable module."""


def boom(msg: str) -> None:
    raise Boom(msg)


def record(path: str, token: str, secs: float = 0.0) -> str:
    """Appends ``token`` and the time to the file at ``path`` (one line per run, so a task that
    ran twice shows twice), sleeps ``secs`` and returns ``token``. Used by the fault tests."""
    import time

    with open(path, "a") as f:
        f.write(f"{token} {time.time():.6f}\n")
    if secs:
        time.sleep(secs)
    return token


def barrier(d: str, n: int) -> tuple:
    """Announces this process in the directory ``d`` (a file named by its id), then waits up to
    20 s for ``n`` announcements. Returns (whether ``n`` processes ran it at the same time, the
    parent's process id): concurrency shown without any bound on wall-clock time."""
    import os
    import time

    open(f"{d}/{os.getpid()}", "w").close()
    for _ in range(2000):
        if len(os.listdir(d)) >= n:
            return True, os.getppid()
        time.sleep(0.01)
    return False, os.getppid()
