"""Dispatcher life cycle: tasks queued while it was down, a kill -9 mid-task, a graceful stop, idling."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from faas_client import Client
from faas_stack import Stack


@pytest.fixture()
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, processes=2).start()
    yield s
    s.stop()


def wait_running(client: Client, tid: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.status(tid) != "RUNNING":
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.02)


def test_tasks_queued_while_no_dispatcher_runs_are_picked_up(own_stack: Stack) -> None:
    c = Client(own_stack.url)
    own_stack.stop_dispatcher()
    fid = c.register(lambda x: x * 10)
    tasks = [c.execute(fid, i) for i in range(5)]
    time.sleep(0.5)
    assert {c.status(t) for t in tasks} == {"QUEUED"}
    own_stack.start_dispatcher()
    assert [c.wait(t) for t in tasks] == [("COMPLETED", i * 10) for i in range(5)]


def test_kill_9_of_the_dispatcher_loses_no_task(own_stack: Stack) -> None:
    c = Client(own_stack.url)
    sleeper = c.register(lambda: __import__("time").sleep(30))
    slow = [c.execute(sleeper) for _ in range(own_stack.processes)]
    for t in slow:
        wait_running(c, t)
    # Every executor is busy, so these stay in the queue.
    queued = [c.execute(c.register(lambda i: i), i) for i in range(3)]
    time.sleep(0.3)
    assert {c.status(t) for t in queued} == {"QUEUED"}
    assert own_stack.dispatcher is not None
    own_stack.dispatcher.kill()  # SIGKILL: no drain, executors die with it
    own_stack.dispatcher.wait()
    own_stack.dispatcher = None
    assert {c.status(t) for t in slow} == {"RUNNING"}
    own_stack.start_dispatcher()
    for t in slow:
        status, e = c.wait(t)
        assert status == "FAILED"
        assert type(e).__name__ == "WorkerFailure", repr(e)
        assert str(e).startswith("WorkerFailure:"), str(e)
    assert [c.wait(t) for t in queued] == [("COMPLETED", i) for i in range(3)]


def test_sigterm_lets_running_tasks_finish(own_stack: Stack) -> None:
    c = Client(own_stack.url)
    tid = c.execute(c.register(lambda: __import__("time").sleep(1) or "finished"))
    wait_running(c, tid)
    own_stack.stop_dispatcher(signal.SIGTERM)
    assert c.result(tid) == ("COMPLETED", "finished")


def test_idle_dispatcher_does_not_spin(own_stack: Stack) -> None:
    c = Client(own_stack.url)
    c.run(lambda: 0)  # started and warm
    assert own_stack.dispatcher is not None
    pid = own_stack.dispatcher.pid

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks()
    time.sleep(3)
    used = (cpu_ticks() - before) / hz
    assert used < 0.15, f"idle dispatcher used {used:.2f} s of CPU in 3 s"
