"""Graceful stops (SIGTERM) with drains that run out: nothing is left RUNNING.

- local dispatcher: unfinished runs are handed back to the queue when the drain times out;
- worker: short tasks finish and are reported; long ones are killed at the drain deadline and
  handed back (`release`), then run on another worker (not counted against max_retries);
- remote dispatcher: workers keep their tasks and report them to the next dispatcher.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from faas_client import Client
from faas_stack import Stack


def sleep_once(marker: str, secs: float) -> str:
    """Sleeps `secs` on the first run (leaving `marker`), returns at once on later runs.
    Defined in an importable module, so it is pickled by reference."""
    if os.path.exists(marker):
        return "second run"
    with open(marker, "w"):
        pass
    time.sleep(secs)
    return "first run"


def nap(secs: float) -> str:
    time.sleep(secs)
    return "done"


def set_drain(path: Path, secs: float) -> None:
    text = re.sub(r"drain_timeout_secs = \S+", f"drain_timeout_secs = {secs}", path.read_text())
    path.write_text(text)


def wait_status(c: Client, tid: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.status(tid) != want:
        assert time.monotonic() < deadline, f"task never became {want} (is {c.status(tid)})"
        time.sleep(0.02)


def terminate(p: "subprocess.Popen[bytes]", timeout: float) -> tuple[int, float]:
    """SIGTERM; returns (exit code, seconds it took)."""
    start = time.monotonic()
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=timeout)
    return code, time.monotonic() - start


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, processes=2)
    set_drain(s.config, 1)
    s.start()
    yield s
    s.stop()


def test_local_drain_timeout_hands_running_tasks_back(local: Stack, tmp_path: Path) -> None:
    c = Client(local.url)
    tid = c.execute(c.register(sleep_once), str(tmp_path / "marker"), 30)
    wait_status(c, tid, "RUNNING")
    assert local.dispatcher is not None
    code, took = terminate(local.dispatcher, timeout=30)
    local.dispatcher = None
    assert code == 0, local.log("dispatcher")
    assert took < 4, f"stop took {took:.1f} s with a 1 s drain"
    assert c.status(tid) == "QUEUED"
    local.start_dispatcher()
    assert c.wait(tid) == ("COMPLETED", "second run")


@pytest.fixture(params=["push", "pull"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, mode=request.param, workers=2, processes=1)
    set_drain(s.worker_config, 1)
    s.start()
    yield s
    s.stop()


def test_worker_sigterm_lets_a_short_task_complete(two_workers: Stack) -> None:
    c = Client(two_workers.url)
    tid = c.execute(c.register(nap), 0.3)  # well within the 1 s drain
    i = two_workers.worker_running_a_task()
    code, _ = terminate(two_workers.workers[i], timeout=30)
    assert code == 0, two_workers.log(f"worker{i}")
    # Reported before the worker exited.
    assert c.result(tid) == ("COMPLETED", "done")
    assert "handed" not in two_workers.log("dispatcher")


def test_worker_drain_timeout_hands_the_task_to_another_worker(
    two_workers: Stack, tmp_path: Path
) -> None:
    c = Client(two_workers.url)
    tid = c.execute(c.register(sleep_once), str(tmp_path / "marker"), 30)
    wait_status(c, tid, "RUNNING")
    i = two_workers.worker_running_a_task()
    code, took = terminate(two_workers.workers[i], timeout=30)
    assert code == 0, two_workers.log(f"worker{i}")
    assert took < 5, f"worker stop took {took:.1f} s with a 1 s drain"
    # max_retries is 0: only a hand-back (not a loss) lets it run again.
    assert c.wait(tid, timeout=30) == ("COMPLETED", "second run")
    assert "handed it back" in two_workers.log("dispatcher")


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_remote_dispatcher_stop_leaves_tasks_with_workers(mode: str, tmp_path: Path) -> None:
    s = Stack(tmp_path, mode=mode, workers=1, processes=2)
    set_drain(s.config, 0.5)
    s.start()
    try:
        c = Client(s.url)
        tid = c.execute(c.register(nap), 4.0)
        wait_status(c, tid, "RUNNING")
        assert s.dispatcher is not None
        code, took = terminate(s.dispatcher, timeout=30)
        s.dispatcher = None
        assert code == 0, s.log("dispatcher")
        assert took < 3
        assert c.status(tid) == "RUNNING"
        assert s.workers[0].poll() is None, "the worker keeps running"
        s.start_dispatcher()
        assert c.wait(tid, timeout=30) == ("COMPLETED", "done")
    finally:
        s.stop()
