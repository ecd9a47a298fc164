"""Dispatcher life cycle: tasks queued while it was down, a kill -9 mid-task, a graceful stop, idling."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Dict, Iterator

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


class Drain:
    """A full queue of ``record`` tasks (each appends its token to ``runs`` and sleeps ``secs``)
    submitted while no dispatcher runs, then a dispatcher started and seen to run ``started`` of
    them."""

    def __init__(self, s: Stack, tmp_path: Path, n: int, secs: float, started: int) -> None:
        from faas_testfuncs import record

        self.client = Client(s.url)
        self.runs = tmp_path / "runs.txt"
        fid = self.client.register(record, name="record")
        s.stop_dispatcher()
        self.tokens = [f"t{i}" for i in range(n)]
        self.tasks = self.client.submit_batch(
            fid, [((str(self.runs), tok, secs), {}) for tok in self.tokens])
        s.start_dispatcher()
        deadline = time.monotonic() + 60
        while not self.runs.exists() or len(self.runs.read_text().splitlines()) < started:
            assert time.monotonic() < deadline, "the drain did not start"
            time.sleep(0.01)

    def ran(self) -> Dict[str, int]:
        """How many times each token ran."""
        ran: Dict[str, int] = {}
        for line in self.runs.read_text().splitlines():
            tok = line.split()[0]
            ran[tok] = ran.get(tok, 0) + 1
        return ran


def test_kill_9_mid_batch_loses_no_task_and_runs_none_twice(tmp_path: Path) -> None:
    """A dispatcher killed while it drains a full queue (claims and results in batches): after a
    restart every task ends, each ran at most once, and the only failures are the runs the kill
    took (``WorkerFailure``, ``max_retries = 0``)."""
    s = Stack(tmp_path, processes=4).start()
    try:
        d = Drain(s, tmp_path, 600, 0.002, started=100)
        c, tasks = d.client, d.tasks
        assert s.dispatcher is not None
        s.dispatcher.kill()  # SIGKILL mid-drain: batches claimed, results waiting to be stored
        s.dispatcher.wait()
        s.dispatcher = None
        s.start_dispatcher()
        outcome = {t: c.wait(t, timeout=120) for t in tasks}
        ran = d.ran()
        assert {tok: n for tok, n in ran.items() if n > 1} == {}, "tasks that ran twice"
        failed = {t: v for t, v in outcome.items() if v[0] != "COMPLETED"}
        for t, tok in zip(tasks, d.tokens):
            status, value = outcome[t]
            if status == "COMPLETED":
                assert value == tok and ran.get(tok) == 1, (t, value)
        for status, e in failed.values():
            assert status == "FAILED" and type(e).__name__ == "WorkerFailure", (status, repr(e))
        print(f"\n{len(ran)} ran, {len(failed)} FAILED by the kill")
        assert len(failed) < len(tasks) / 2, f"{len(failed)} FAILED"
    finally:
        s.stop()


@pytest.mark.parametrize("mode", ["local", "push", "pull"])
def test_sigterm_mid_drain_hands_back_what_it_read_ahead(mode: str, tmp_path: Path) -> None:
    """A dispatcher stopped while it drains a queue of short tasks (it reads entries ahead of its
    free processes, or for its workers) leaves nothing pending under its name: what it read and
    did not start is back in the queue, still QUEUED, and the next dispatcher runs every task
    exactly once."""
    s = Stack(tmp_path, mode=mode, workers=0 if mode == "local" else 1, processes=2).start()
    try:
        d = Drain(s, tmp_path, 800, 0.001, started=200)
        c, tasks = d.client, d.tasks
        s.stop_dispatcher(signal.SIGTERM)
        pending = s.redis_cli("XPENDING", "faas:queue", "dispatchers").split()
        assert pending[0] == "0", f"entries left pending by a stopped dispatcher: {pending}"
        statuses = [c.status(t) for t in tasks]
        assert "RUNNING" not in statuses
        queued = statuses.count("QUEUED")
        assert int(s.redis_cli("XLEN", "faas:queue")) == queued
        s.start_dispatcher()
        outcome = [c.wait(t, timeout=120) for t in tasks]
        assert outcome == [("COMPLETED", tok) for tok in d.tokens]
        assert {tok: n for tok, n in d.ran().items() if n != 1} == {}
        print(f"\n{queued} tasks were still queued at the stop")
    finally:
        s.stop()
