"""Fixtures: real faas stacks (redis-server + gateway + dispatcher) started per test module."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from faas_client import Client
from stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default deployment: local mode, 4 executor processes, fork isolation."""
    s = Stack(Path(tmp_path_factory.mktemp("stack"))).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack: Stack) -> Client:
    return Client(stack.url)
