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
