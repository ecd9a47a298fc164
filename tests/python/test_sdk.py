"""The Python SDK (faas_client, installed from python/) against real stacks: every Client call,
FaasExecutor, the version warning, per-task timeouts, cancel, function deletion, and the
``faas`` command."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import pytest

import faas_testfuncs
from faas_client import (
    ALL_COMPLETED,
    Client,
    FaasExecutor,
    NotFound,
    ValidationError,
    VersionMismatchWarning,
    WaitTimeout,
    remote_traceback,
)
from faas_client import _serialize as ser
from faas_stack import Stack


@pytest.fixture(scope="module")
def one() -> Iterator[Stack]:
    """One executor process (fork isolation): a second task stays QUEUED behind a running one."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = Stack(Path(d), processes=1).start()
        yield s
        s.stop()


@pytest.fixture(scope="module")
def quick() -> Iterator[Stack]:
    """Four reuse executors."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = Stack(Path(d), processes=4, executor='isolation = "reuse"').start()
        yield s
        s.stop()


def wait_status(c: Client, tid: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.status(tid) != status:
        assert time.monotonic() < deadline, f"task {tid} never became {status}"
        time.sleep(0.02)


def divide(a: float, b: float) -> float:
    return a / b


# ---- Client ---------------------------------------------------------------------------------


def test_client_register_submit_get_wait(quick: Stack) -> None:
    c = Client(quick.url)
    fid = c.register(divide)
    assert c.register(divide) == fid, "cached per function object"
    assert c.register(divide, name="again") != fid, "an explicit name registers anew"
    assert c.run(divide, 84, 2) == 42
    tid = c.submit(divide, (1, 4))
    assert c.get(tid, timeout=30) == 0.25
    assert c.wait(tid) == ("COMPLETED", 0.25)
    assert c.result(tid) == ("COMPLETED", 0.25)
    assert c.status(tid) == "COMPLETED"
    r = c.task(tid)
    assert r.runtime == ser.local_runtime(), "results carry the executors' versions"
    # Remote exceptions are raised here, with the remote traceback.
    with pytest.raises(ZeroDivisionError) as info:
        c.run(divide, 1, 0)
    tb = remote_traceback(info.value)
    assert tb is not None and "in divide" in tb and "return a / b" in tb
    # wait() returns the exception as a value (the spec client's behaviour).
    status, exc = c.wait(c.execute(divide, 1, 0))
    assert status == "FAILED" and isinstance(exc, ZeroDivisionError)
    # By reference (an importable module) works as well.
    assert c.run(faas_testfuncs.add, 40, b=2) == 42


def test_wait_timeouts_and_unknown_ids(quick: Stack) -> None:
    c = Client(quick.url)
    tid = c.submit(lambda: __import__("time").sleep(3) or "late")
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        c.get(tid, timeout=0.3)
    assert time.monotonic() - started < 2.5
    with pytest.raises(WaitTimeout):
        c.wait(tid, timeout=0.2)
    assert c.result(tid)[0] in ("QUEUED", "RUNNING")
    assert c.get(tid, timeout=30) == "late", "the task went on"
    unknown = str(uuid.uuid4())
    for call in (c.status, c.result, c.get, c.cancel):
        with pytest.raises(NotFound):
            call(unknown)


def test_wait_many_and_as_completed(quick: Stack) -> None:
    c = Client(quick.url)
    slow = c.submit(lambda: __import__("time").sleep(1.5) or "slow")
    fast = c.submit(lambda: "fast")
    unknown = str(uuid.uuid4())
    got = c.wait_many([slow, fast], timeout=20)
    assert fast in got.done and slow in got.pending
    assert got.done[fast].value == "fast"
    got = c.wait_many([slow, fast, unknown], timeout=20, return_when=ALL_COMPLETED)
    assert set(got.done) == {slow, fast} and got.unknown == [unknown] and got.pending == []
    ids = c.submit_batch(divide, [((i, 1), {}) for i in range(50)])
    assert sorted(r.value for r in c.as_completed(ids, timeout=60)) == list(range(50))


def test_task_timeout_fails_the_task_with_a_timeout_error(quick: Stack) -> None:
    c = Client(quick.url)
    tid = c.submit(lambda: __import__("time").sleep(30), task_timeout=0.5)
    with pytest.raises(TimeoutError) as info:
        c.get(tid, timeout=30)
    assert type(info.value).__name__ == "TaskTimeout"
    assert str(info.value).startswith("TaskTimeout: ")
    with pytest.raises(ValidationError):
        c.submit(divide, (1, 1), task_timeout=10**9)
    with pytest.raises(ValidationError):
        c.submit(divide, (1, 1), task_timeout=0)


def test_task_timeout_in_every_shape(stack: Stack, client: Client) -> None:
    """The per-task timeout travels with the task to workers (pull and push)."""
    tid = client.submit(lambda: __import__("time").sleep(30), task_timeout=0.5)
    status, exc = client.wait(tid, timeout=30)
    assert status == "FAILED" and isinstance(exc, TimeoutError), exc
    assert client.run(lambda: "after") == "after"


def test_cancel_queued_running_and_finished(one: Stack) -> None:
    c = Client(one.url)
    running = c.submit(lambda: __import__("time").sleep(2) or "ran")
    wait_status(c, running, "RUNNING")
    queued = c.submit(lambda: "never")
    assert c.status(queued) == "QUEUED"
    assert c.cancel(queued) is True
    status, exc = c.wait(queued)
    assert status == "FAILED" and type(exc).__name__ == "TaskCancelled"
    assert str(exc).startswith("TaskCancelled: ")
    assert c.cancel(queued) is False, "already FAILED"
    assert c.cancel(running, running=False) is False, "RUNNING, and only queued tasks asked for"
    assert c.get(running, timeout=30) == "ran"
    assert c.cancel(running) is False, "COMPLETED"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_running_kills_the_executor_in_every_shape(stack: Stack, client: Client, tmp_path: Path) -> None:
    """POST /cancel of a RUNNING task: FAILED with TaskCancelled at once, the process running it
    is killed wherever it runs (local executor or a worker's), nothing it would have done after
    happens, and the executor slot serves the next task."""
    marker = tmp_path / "finished"
    pid_file = tmp_path / "pid"

    def slow(pid_path: str, marker_path: str) -> str:
        import os as _os
        import time as _time

        with open(pid_path, "w") as f:
            f.write(str(_os.getpid()))
        _time.sleep(4)
        with open(marker_path, "w") as f:
            f.write("ran to the end")
        return "not cancelled"

    tid = client.submit(slow, (str(pid_file), str(marker)))
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    assert client.status(tid) == "RUNNING"
    assert client.cancel(tid) is True
    status, exc = client.wait(tid, timeout=5)
    assert status == "FAILED" and type(exc).__name__ == "TaskCancelled", exc
    assert "while running" in str(exc)
    deadline = time.monotonic() + 5
    while _pid_alive(pid):
        assert time.monotonic() < deadline, f"the run's process {pid} was not killed"
        time.sleep(0.05)
    time.sleep(4.5)
    assert not marker.exists(), "the cancelled run went on to the end"
    assert client.cancel(tid) is False, "already FAILED"
    # Every slot still serves (the killed run freed its slot, locally or on the worker).
    ids = [client.submit(lambda i: i * 2, (i,)) for i in range(8)]
    assert [client.get(t, timeout=30) for t in ids] == [i * 2 for i in range(8)]


def test_functions_listed_described_and_deleted(one: Stack) -> None:
    c = Client(one.url)

    def square(x: int) -> int:
        return x * x

    fid = c.register(square)
    assert c.function(fid).name == "square"
    assert fid in {f.function_id for f in c.functions()}
    blocker = c.submit(lambda: __import__("time").sleep(2))
    wait_status(c, blocker, "RUNNING")
    queued = [c.submit(fid, (i,)) for i in range(3)]
    assert c.delete(fid) == 3
    for tid in queued:
        status, exc = c.wait(tid)
        assert status == "FAILED" and type(exc).__name__ == "FunctionDeleted", exc
        assert "square" in str(exc)
    with pytest.raises(NotFound):
        c.function(fid)
    with pytest.raises(NotFound):
        c.submit(fid, (1,))
    # A callable whose cached id was deleted is registered again, transparently.
    assert c.run(square, 7) == 49
    assert c.delete(square) == 0
    with pytest.raises(NotFound):
        c.delete(square)


def test_info_reports_executor_versions_without_a_warning(quick: Stack) -> None:
    c = Client(quick.url)
    info = c.info()
    assert info["runtimes"] == [ser.local_runtime()]
    assert info["dispatchers"][0]["workers"][0]["slots"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        c.register(lambda: None)


def test_version_mismatch_warns(quick: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ser, "local_runtime", lambda: {"python": "3.0.1", "dill": "0.0.1"})
    c = Client(quick.url)
    with pytest.warns(VersionMismatchWarning, match="executors run Python"):
        c.register(lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        c.register(lambda: 1)  # once per client
    with pytest.warns(VersionMismatchWarning, match="dill"):
        with FaasExecutor(quick.url) as ex:
            assert ex.submit(divide, 1, 1).result(30) == 1


# ---- FaasExecutor ---------------------------------------------------------------------------


def test_executor_map_submit_and_exceptions(quick: Stack) -> None:
    with FaasExecutor(quick.url, batch_size=64) as ex:
        assert list(ex.map(divide, range(300), [2] * 300)) == [i / 2 for i in range(300)]
        assert list(ex.map(divide, [])) == []
        f = ex.submit(divide, 1, 0)
        with pytest.raises(ZeroDivisionError) as info:
            f.result(30)
        assert remote_traceback(info.value) is not None
        assert isinstance(f.exception(), ZeroDivisionError)
        results = ex.map(divide, [1, 2, 3], [1, 0, 1])
        assert next(results) == 1
        with pytest.raises(ZeroDivisionError):
            next(results)
        futures = [ex.submit(divide, i, 1) for i in range(20)]
        done = [f.result() for f in concurrent.futures.as_completed(futures, timeout=60)]
        assert sorted(done) == list(range(20))
        assert all(f.task_id for f in futures)


def test_executor_quick_task_is_not_held_up_by_slow_ones(quick: Stack) -> None:
    with FaasExecutor(quick.url) as ex:
        slow = ex.submit(lambda: __import__("time").sleep(3) or "slow")
        time.sleep(0.2)  # the waiter now long-polls for the slow task alone
        started = time.monotonic()
        assert ex.submit(lambda: "fast").result(timeout=10) == "fast"
        took = time.monotonic() - started
        print(f"quick task behind a slow one: {took * 1000:.1f} ms")
        assert took < 2.5, f"the quick task waited {took:.2f} s for the slow one"
        assert slow.result(30) == "slow"


def test_executor_future_cancel_and_shutdown(one: Stack) -> None:
    ex = FaasExecutor(one.url)
    running = ex.submit(lambda: __import__("time").sleep(2) or "ran")
    wait_status(ex.client, running.task_id or "", "RUNNING")
    queued = ex.submit(lambda: "never")
    assert queued.cancel() is True and queued.cancelled()
    assert Client(one.url).wait(queued.task_id or "")[0] == "FAILED", "cancelled on the server"
    assert running.cancel(running=False) is False, "the standard library's rule: running calls keep going"
    later = [ex.submit(lambda: "never either") for _ in range(3)]
    # shutdown(cancel_futures=True) keeps the standard library's rule too: only calls that
    # have not started are cancelled.
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() == "ran"
    assert all(f.cancelled() for f in later)
    # A running remote call can be stopped, unlike a local one.
    ex2 = FaasExecutor(one.url)
    stoppable = ex2.submit(lambda: __import__("time").sleep(30) or "ran")
    wait_status(ex2.client, stoppable.task_id or "", "RUNNING")
    assert stoppable.cancel() is True and stoppable.cancelled()
    status, exc = Client(one.url).wait(stoppable.task_id or "", timeout=10)
    assert status == "FAILED" and type(exc).__name__ == "TaskCancelled"
    assert ex2.submit(lambda: "next").result(30) == "next", "the slot was freed"
    ex2.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(divide, 1, 1)


def test_executor_task_timeout(quick: Stack) -> None:
    with FaasExecutor(quick.url, task_timeout=0.5) as ex:
        f = ex.submit(lambda: __import__("time").sleep(30))
        with pytest.raises(TimeoutError):
            f.result(30)


# ---- the faas command -----------------------------------------------------------------------


def faas(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("faas")
    importable = str(Path(__file__).with_name("importable"))
    env = dict(os.environ, FAAS_URL=url, PYTHONPATH=importable)
    return subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_cli_functions_status_result_cancel_info(one: Stack) -> None:
    c = Client(one.url)
    fid = c.register(divide, name="cli-divide")
    ok = c.submit(fid, (6, 3))
    bad = c.submit(fid, (1, 0))
    c.wait(ok), c.wait(bad)
    r = faas(one.url, "functions")
    assert r.returncode == 0 and fid in r.stdout and "cli-divide" in r.stdout
    r = faas(one.url, "function", fid)
    assert json.loads(r.stdout)["name"] == "cli-divide"
    r = faas(one.url, "status", ok, bad)
    assert r.stdout.split() == [ok, "COMPLETED", bad, "FAILED"]
    r = faas(one.url, "result", ok)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "2.0"
    r = faas(one.url, "result", bad)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stdout and "Remote traceback" in r.stdout
    r = faas(one.url, "cancel", ok)
    assert r.returncode == 1 and "not cancelled (already finished)" in r.stdout
    r = faas(one.url, "result", str(uuid.uuid4()))
    assert r.returncode == 2 and "404" in r.stderr
    r = faas(one.url, "info")
    assert json.loads(r.stdout)["runtimes"] == [ser.local_runtime()]
    r = faas(one.url, "delete", fid)
    assert r.returncode == 0 and "deleted" in r.stdout


def test_cli_map_over_an_input_file(quick: Stack, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(200)))
    out = tmp_path / "out.jsonl"
    # By reference: faas_testfuncs is importable by the executors.
    r = faas(quick.url, "map", "faas_testfuncs:add", str(inputs), "-o", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{"index": i, "value": i} for i in range(200)]
    assert "200/200" in r.stderr and "[" in r.stderr, "progress bar"
    # By value, from a file the executors do not have; one call fails.
    mod = tmp_path / "local_only_mod.py"
    mod.write_text("def inv(x):\n    return 1 / x\n")
    r = faas(quick.url, "map", f"{mod}:inv", "-", "--by-value", stdin="1\n0\n4\n")
    assert r.returncode == 1
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert got[0] == {"index": 0, "value": 1.0} and got[2] == {"index": 2, "value": 0.25}
    assert got[1]["error"].startswith("ZeroDivisionError")
    # --star unpacks lists and objects.
    r = faas(quick.url, "map", "faas_testfuncs:add", "-", "--star", stdin='[1, 2]\n{"a": 3, "b": 4}\n')
    assert [json.loads(x)["value"] for x in r.stdout.splitlines()] == [3, 7]


def test_executor_futures_survive_a_gateway_restart(tmp_path: Path) -> None:
    """kill -9 of the gateway while the waiter long-polls: the futures still complete once a new
    gateway serves (the waiter reconnects; its cursor from the old gateway is ignored)."""
    import signal

    from faas_stack import BIN_DIR, wait_port

    s = Stack(tmp_path, processes=2, executor='isolation = "reuse"').start()
    try:
        with FaasExecutor(s.url) as ex:
            futures = [ex.submit(lambda i=i: __import__("time").sleep(1.5) or i) for i in range(2)]
            quick = list(ex.map(divide, range(10), [1] * 10))
            assert quick == list(range(10))
            gateway = next(p for n, p in s.named_procs() if n == "gateway")
            gateway.send_signal(signal.SIGKILL)
            gateway.wait()
            time.sleep(0.5)
            s._spawn("gateway", [str(BIN_DIR / "faas-gateway"), "--listen", f"127.0.0.1:{s.http_port}",
                                 "--redis", s.redis_url])
            wait_port(s.http_port)
            assert [f.result(timeout=30) for f in futures] == [0, 1]
            assert ex.submit(divide, 9, 3).result(timeout=30) == 3
    finally:
        s.stop()
