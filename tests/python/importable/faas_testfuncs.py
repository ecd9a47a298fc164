"""Functions pickled *by reference*: importable by the client (tests dir) and by executors
(the test stack adds this directory to the executor's ``pythonpath``)."""

from __future__ import annotations


def add(a: int, b: int = 0) -> int:
    return a + b


class Boom(Exception):
    """A user exception defined in an importable module."""


def boom(msg: str) -> None:
    raise Boom(msg)
