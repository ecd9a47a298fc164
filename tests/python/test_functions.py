"""Kinds of functions users send: by value (__main__, closures, classes) and by reference."""

from __future__ import annotations

import faas_testfuncs  # importable by the client and (via the stack's pythonpath) by executors
import pytest

from faas_client import Client


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_closure_and_lambda(client: Client) -> None:
    k = 7

    def times_k(x: int) -> int:
        return x * k

    assert client.run(times_k, 6) == 42
    assert client.run(lambda s: s[::-1], "abc") == "cba"


def test_classes_defined_in_main_travel_by_value(client: Client) -> None:
    assert client.run(lambda p: p.norm1(), Point(3, -4)) == 7
    got = client.run(lambda x, y: Point(x, y), 1, 2)
    assert (type(got).__name__, got.x, got.y) == ("Point", 1, 2)


def test_functions_pickled_by_reference(client: Client) -> None:
    assert client.run(faas_testfuncs.add, 40, b=2) == 42
    with pytest.raises(faas_testfuncs.Boom, match="kaboom"):
        client.run(faas_testfuncs.boom, "kaboom")


def test_large_results_and_arguments(client: Client) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB
    assert client.run(lambda b: b[::-1], blob) == blob[::-1]


def test_printing_does_not_corrupt_results(client: Client) -> None:
    def noisy(n: int) -> int:
        import sys

        for i in range(n):
            print("x" * 100, i)
            print("\x00\xff garbage", file=sys.stderr)
        return n

    assert client.run(noisy, 2000) == 2000
