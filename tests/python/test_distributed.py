"""Pull and push modes with real worker daemons: load spreading, worker loss (kill -9, SIGSTOP),
deadlines, retries and dispatcher restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from faas_client import Client
from faas_testfuncs import barrier
from faas_stack import BIN_DIR, PYTHON, Stack, free_port

MODES = ["pull", "push"]
# Liveness threshold of the test stacks: 200 ms × 4 (see stack.py), plus a margin for slow CI.
DETECT = 0.8 + 2.0


def wait_status(c: Client, tid: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.status(tid) != want:
        assert time.monotonic() < deadline, f"task never became {want}"
        time.sleep(0.02)


def zygote_of_pid() -> int:
    """Runs inside a task: the parent of a forked task process is its worker's zygote."""
    return os.getppid()


@pytest.fixture(params=MODES)
def three(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, mode=request.param, workers=3, processes=2).start()
    yield s
    s.stop()


def test_load_spreads_over_all_workers(three: Stack, tmp_path: Path) -> None:
    c = Client(three.url)
    fid = c.register(barrier)
    d = tmp_path / "barrier"  # tmp_path also holds the stack's files
    d.mkdir()
    # 6 tasks that each wait for all 6 to run: only 3 workers × 2 processes at once pass.
    tasks = [c.execute(fid, str(d), 6) for _ in range(6)]
    results = [c.wait(t, timeout=60) for t in tasks]
    assert [(status, v[0]) for status, v in results] == [("COMPLETED", True)] * 6
    assert len({v[1] for _, v in results}) == 3, "every worker ran tasks"


def kill_busy_worker(s: Stack, c: Client, sig: int) -> tuple[str, int]:
    """Starts a long task, finds the worker running it, sends it `sig`. Returns (task, index)."""
    tid = c.execute(c.register(lambda: __import__("time").sleep(60)))
    wait_status(c, tid, "RUNNING")
    i = s.worker_running_a_task()
    os.kill(s.workers[i].pid, sig)
    return tid, i


def test_kill_9_of_a_worker_fails_its_task_and_others_keep_serving(three: Stack) -> None:
    c = Client(three.url)
    tid, _ = kill_busy_worker(three, c, signal.SIGKILL)
    start = time.monotonic()
    status, e = c.wait(tid, timeout=30)
    took = time.monotonic() - start
    assert status == "FAILED"
    assert type(e).__name__ == "WorkerFailure" and str(e).startswith("WorkerFailure:"), repr(e)
    assert took < DETECT, f"worker loss noticed after {took:.2f} s"
    assert [c.run(lambda i: i * 2, i) for i in range(6)] == [i * 2 for i in range(6)]


def test_a_hung_worker_is_detected_like_a_dead_one(three: Stack) -> None:
    c = Client(three.url)
    tid, i = kill_busy_worker(three, c, signal.SIGSTOP)
    try:
        start = time.monotonic()
        status, e = c.wait(tid, timeout=30)
        assert status == "FAILED"
        assert type(e).__name__ == "WorkerFailure", repr(e)
        assert time.monotonic() - start < DETECT
        assert c.run(lambda: "others serve") == "others serve"
    finally:
        os.kill(three.workers[i].pid, signal.SIGCONT)


@pytest.mark.parametrize("mode", MODES)
def test_lost_tasks_are_retried_when_allowed(mode: str, tmp_path: Path) -> None:
    s = Stack(tmp_path, mode=mode, workers=2, processes=1, dispatcher="max_retries = 1").start()
    try:
        c = Client(s.url)
        # Sleeps 2 s the first time only (a marker file says it ran before).
        marker = tmp_path / "ran-once"

        def once(path: str) -> str:
            import os
            import time

            if not os.path.exists(path):
                open(path, "w").close()
                time.sleep(60)
            return "second run"

        tid = c.execute(c.register(once), str(marker))
        wait_status(c, tid, "RUNNING")
        while not marker.exists():
            time.sleep(0.02)
        os.kill(s.workers[s.worker_running_a_task()].pid, signal.SIGKILL)
        assert c.wait(tid, timeout=30) == ("COMPLETED", "second run")
    finally:
        s.stop()


def test_pull_deadline_fails_tasks_that_take_too_long(tmp_path: Path) -> None:
    s = Stack(tmp_path, mode="pull", workers=1, processes=2,
              dispatcher="task_deadline_secs = 1").start()
    try:
        c = Client(s.url)
        status, e = c.wait(c.execute(c.register(lambda: __import__("time").sleep(5))), timeout=30)
        assert status == "FAILED"
        assert type(e).__name__ == "WorkerFailure" and "deadline" in str(e), repr(e)
        assert c.run(lambda: "fast") == "fast"
    finally:
        s.stop()


@pytest.mark.parametrize("mode", MODES)
def test_workers_survive_a_dispatcher_restart(mode: str, tmp_path: Path) -> None:
    s = Stack(tmp_path, mode=mode, workers=2, processes=2).start()
    try:
        c = Client(s.url)
        c.run(lambda: 0)
        running = c.execute(c.register(lambda: __import__("time").sleep(2) or "finished"))
        wait_status(c, running, "RUNNING")
        # RUNNING is recorded when the dispatcher claims the task, just before it sends it: kill
        # the dispatcher only once a worker really runs it.
        s.worker_running_a_task()
        s.stop_dispatcher(signal.SIGKILL)
        s.start_dispatcher()
        # The task finished on its worker while no dispatcher listened; it is reported after.
        assert c.wait(running, timeout=30) == ("COMPLETED", "finished")
        assert [c.run(lambda i: i + 1, i) for i in range(4)] == [1, 2, 3, 4]
        assert all(w.poll() is None for w in s.workers), "workers kept running"
    finally:
        s.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_restarted_worker_rejoins(mode: str, tmp_path: Path) -> None:
    s = Stack(tmp_path, mode=mode, workers=1, processes=2).start()
    try:
        c = Client(s.url)
        assert c.run(lambda: 1) == 1
        s.workers[0].terminate()
        s.workers[0].wait(timeout=30)
        s.start_worker()
        assert c.run(lambda: 2) == 2
    finally:
        s.stop()


@pytest.mark.parametrize("mode", MODES)
def test_runs_survive_a_long_dispatcher_outage(mode: str, tmp_path: Path) -> None:
    """kill -9 of the dispatcher, back 20 s later (longer than a systemd restart cycle): a task
    that finished during the outage and a 60 s one that finishes after it both end COMPLETED
    (workers keep reconnecting and keep their results; orphan_grace_secs outlasts the outage)."""
    s = Stack(tmp_path, mode=mode, workers=1, processes=2).start()
    try:
        c = Client(s.url)
        fid = c.register(lambda t: __import__("time").sleep(t) or f"slept {t}")
        short = c.execute(fid, 5)
        long = c.execute(fid, 60)
        wait_status(c, short, "RUNNING")
        wait_status(c, long, "RUNNING")
        s.worker_running_a_task()
        s.stop_dispatcher(signal.SIGKILL)
        time.sleep(20)
        s.start_dispatcher()
        assert c.wait(short, timeout=30) == ("COMPLETED", "slept 5")
        assert c.wait(long, timeout=90) == ("COMPLETED", "slept 60")
        assert c.run(lambda: "after") == "after"
    finally:
        s.stop()


def submit_noops(s: Stack, n: int) -> None:
    """Queues ``n`` no-op tasks at once with the load generator (far faster than they drain)."""
    subprocess.run([str(BIN_DIR / "faas-loadgen"), "--url", s.url, "--python", PYTHON,
                    "--out", str(s.workdir / "loadgen.json"), "-c", "16", "submit", "--tasks", str(n)],
                   check=True, capture_output=True, timeout=120)


def wait_queue_empty(s: Stack, timeout: float) -> None:
    """The stream holds only queued and running work: empty once every task settled."""
    deadline = time.monotonic() + timeout
    while (left := s.redis_cli("XLEN", "faas:queue")) != "0":
        assert time.monotonic() < deadline, f"{left} queue entries never settled"
        time.sleep(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_read_ahead_of_a_dispatcher_left_without_workers_goes_to_another(mode: str, tmp_path: Path) -> None:
    """A dispatcher reads a deep queue ahead of its worker, which is then killed -9. What it had
    read ahead goes back to the queue, and a second dispatcher started afterwards runs it (kept,
    it would stay QUEUED and pending at the first for as long as that one runs)."""
    # Reuse isolation: no-op runs take well under the read-ahead budget (forks take longer).
    s = Stack(tmp_path, mode=mode, workers=1, processes=2, executor='isolation = "reuse"').start()
    try:
        submit_noops(s, 200)  # the dispatcher learns the pace of no-op runs
        wait_queue_empty(s, 60)
        submit_noops(s, 3000)
        # Pending here: at most 2 runs on its processes and 2 results being stored, plus what it
        # read ahead (a no-op run takes well under the 5 ms per process it reads ahead).
        deadline = time.monotonic() + 30
        while int(s.redis_cli("XPENDING", "faas:queue", "dispatchers").split()[0]) <= 4:
            assert time.monotonic() < deadline, "the dispatcher never read ahead of its worker"
            time.sleep(0.01)
        s.workers[0].kill()
        s.workers[0].wait()
        deadline = time.monotonic() + 30
        while "handed the tasks read but not started back to the queue" not in s.log("dispatcher"):
            assert time.monotonic() < deadline, "the entries read ahead were not handed back"
            time.sleep(0.05)
        port = free_port()
        s._spawn("dispatcher2", [str(BIN_DIR / "faas-dispatcher"), "-m", mode, *s._redis_flag(),
                                 "--config", str(s.config), "--name", f"second-{s.redis_port}",
                                 "-p", str(port)])
        s.start_worker(f"tcp://127.0.0.1:{port}")
        wait_queue_empty(s, 120)
    finally:
        s.stop()
