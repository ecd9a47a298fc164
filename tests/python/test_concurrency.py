"""Tasks run concurrently on the executor processes; many clients at once lose nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from faas_client import Client
from faas_testfuncs import barrier
from faas_stack import Stack


def test_every_slot_runs_a_task_at_once(client: Client, stack: Stack, tmp_path: Path) -> None:
    # Run one after another (or two in one process), the first would give up waiting: False.
    fid = client.register(barrier)
    tasks = [client.execute(fid, str(tmp_path), stack.slots) for _ in range(stack.slots)]
    results = [client.wait(t, timeout=60) for t in tasks]
    assert [(status, v[0]) for status, v in results] == [("COMPLETED", True)] * stack.slots


def test_many_concurrent_clients(client: Client, stack: Stack) -> None:
    fid = client.register(lambda x: x + 1)

    def one(i: int) -> tuple:
        c = Client(stack.url)
        return c.wait(c.execute(fid, i), timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [("COMPLETED", i + 1) for i in range(200)]
