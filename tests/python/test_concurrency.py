"""Tasks run concurrently on the executor processes; many clients at once lose nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from faas_client import Client
from faas_stack import Stack


def test_sleep_tasks_overlap(client: Client, stack: Stack) -> None:
    # N slots run N one-second sleeps in about one second.
    fid = client.register(lambda: __import__("time").sleep(2) or __import__("os").getpid())
    client.wait(client.execute(client.register(lambda: 0)))  # warm
    start = time.monotonic()
    tasks = [client.execute(fid) for _ in range(stack.slots)]
    results = [client.wait(t) for t in tasks]
    took = time.monotonic() - start
    assert all(s == "COMPLETED" for s, _ in results)
    assert len({pid for _, pid in results}) == stack.slots, "each ran in its own process"
    # Concurrent: about one sleep (2 s); run one after another they would take 2 s × slots (≥ 8 s).
    assert took < 4.0, f"{stack.slots} sleeps on {stack.slots} slots took {took:.2f} s"


def test_many_concurrent_clients(client: Client, stack: Stack) -> None:
    fid = client.register(lambda x: x + 1)

    def one(i: int) -> tuple:
        c = Client(stack.url)
        return c.wait(c.execute(fid, i), timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [("COMPLETED", i + 1) for i in range(200)]
