"""Fixtures: real faas stacks (redis-server + gateway + dispatcher [+ workers]) as processes.

The module-independent tests run against every deployment shape: local mode, and pull and push
modes with one worker and with three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator

import pytest

from faas_client import Client
from faas_stack import Stack

# name → (mode, workers, processes per worker); every shape has at least 4 slots.
SHAPES: Dict[str, tuple] = {
    "local": ("local", 0, 4),
    "pull-1": ("pull", 1, 4),
    "pull-3": ("pull", 3, 2),
    "push-1": ("push", 1, 4),
    "push-3": ("push", 3, 2),
}


@pytest.fixture(scope="session", params=list(SHAPES))
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mode, workers, processes = SHAPES[request.param]
    s = Stack(Path(tmp_path_factory.mktemp(request.param)), mode=mode, workers=workers,
              processes=processes).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack: Stack) -> Client:
    return Client(stack.url)
