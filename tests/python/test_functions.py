"""Kinds of functions users send: by value (__main__, closures, classes) and by reference."""

from __future__ import annotations

import faas_testfuncs  # importable by the client and (via the stack's pythonpath) by executors
import pytest

from pathlib import Path

from faas_client import Client
from faas_stack import Stack


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


CLIENT_SCRIPT = """
import sys
from faas_client import Client

SCALE = 3

class Box:
    def __init__(self, v):
        self.v = v

def scaled(box):
    return Box(box.v * SCALE)

c = Client(sys.argv[1])
got = c.run(scaled, Box(14))
print(type(got).__name__, got.v)
"""


def test_functions_defined_in_main_travel_by_value(stack: Stack, tmp_path: Path) -> None:
    """A script's own functions and classes (module __main__) are pickled by value."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "client_script.py"
    script.write_text(CLIENT_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root / "python"))
    out = subprocess.run([sys.executable, str(script), stack.url], capture_output=True,
                         text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Box", "42"]
