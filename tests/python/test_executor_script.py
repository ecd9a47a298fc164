"""Unit tests of the Python side of the executor (run: python -m pytest python/)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dill  # type: ignore[import-untyped]
import pytest

import faas_executor as fe

SCRIPT = Path(__file__).resolve().parents[2] / "src" / "executor" / "faas_executor.py"
LOADER = SCRIPT.with_name("faas_executor_loader.py")
# The tasks below are pickled by reference to this module: executors must import it.
HERE = str(Path(__file__).parent)


def args_payload(*args: Any, **kwargs: Any) -> bytes:
    payload: bytes = dill.dumps((args, kwargs))
    return payload


def run(fn: Any, *args: Any, limits: fe.Limits = fe.Limits(), cache: fe.FunctionCache | None = None, **kwargs: Any) -> fe.Result:
    return fe.run_task(dill.dumps(fn), args_payload(*args, **kwargs), "fid", dill.dumps, dill.loads, limits, cache)


# --- framing ------------------------------------------------------------------------------


def test_encode_frame_layout() -> None:
    assert fe.encode_frame(b"ab") == b"\x00\x00\x00\x02ab"
    assert fe.encode_frame(b"") == b"\x00\x00\x00\x00"


def test_decoder_handles_partial_and_multiple_frames() -> None:
    data = fe.encode_frame(b"hello") + fe.encode_frame(b"") + fe.encode_frame(b"x" * 300)
    dec = fe.FrameDecoder()
    frames: list[bytes] = []
    for i in range(len(data)):  # one byte at a time
        frames += dec.feed(data[i : i + 1])
    assert frames == [b"hello", b"", b"x" * 300]
    assert dec.pending() == 0
    assert fe.FrameDecoder().feed(data) == frames


def test_decoder_rejects_oversized_frames() -> None:
    with pytest.raises(fe.FrameError):
        fe.FrameDecoder(max_frame=10).feed(b"\x00\x00\x00\x0b")


def test_read_frame_eof_and_truncation() -> None:
    stream = io.BytesIO(fe.encode_frame(b"abc"))
    assert fe.read_frame(stream) == b"abc"
    assert fe.read_frame(stream) is None
    with pytest.raises(fe.FrameError):
        fe.read_frame(io.BytesIO(b"\x00\x00\x00\x05ab"))
    with pytest.raises(fe.FrameError):
        fe.read_frame(io.BytesIO(b"\x00\x00"))
    with pytest.raises(fe.FrameError):
        fe.read_frame(io.BytesIO(b"\xff\xff\xff\xff"))


def test_send_frames_small_and_large_over_a_socket() -> None:
    a, b = socket.socketpair()
    big = os.urandom(200_000)
    with a, b:
        import threading

        sender = threading.Thread(target=fe.send_frames, args=(a, b"one", big, b"two"))
        sender.start()
        stream = b.makefile("rb")
        assert fe.read_frame(stream) == b"one"
        assert fe.read_frame(stream) == big
        assert fe.read_frame(stream) == b"two"
        sender.join()


# --- exception packaging --------------------------------------------------------------------


def test_describe_exception_and_one_line() -> None:
    assert fe.describe_exception(ValueError("bad")) == "ValueError: bad"
    assert fe.describe_exception(KeyError()) == "KeyError"

    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert fe.describe_exception(Weird()) == "Weird: <unprintable Weird object>"
    assert fe.one_line("first\nsecond") == "first"
    assert fe.one_line("x" * 600).endswith("...")
    assert fe.one_line("") == ""


def test_package_exception_attaches_remote_traceback() -> None:
    try:
        1 / 0
    except ZeroDivisionError as e:
        header, payload = fe.package_exception(e, dill.dumps, dill.loads)
    assert header == {"status": "error", "cause": "ZeroDivisionError: division by zero"}
    exc = dill.loads(payload)
    assert isinstance(exc, ZeroDivisionError)
    assert exc.__notes__[0].startswith("Remote traceback:\nTraceback (most recent call last):")
    assert "1 / 0" in exc.__notes__[0]


class NeedsTwo(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def test_package_exception_falls_back_when_unpicklable() -> None:
    try:
        raise NeedsTwo("x", "y")
    except NeedsTwo as e:
        header, payload = fe.package_exception(e, dill.dumps, dill.loads)
    assert payload == b""
    assert header["status"] == "foreign_error"
    assert header["type"] == "NeedsTwo"
    assert header["cause"] == "NeedsTwo: x/y"
    assert header["message"].startswith("NeedsTwo: x/y\n\nRemote traceback:\n")
    assert "TypeError" in header["detail"]


# --- running tasks ----------------------------------------------------------------------------


def test_run_task_returns_pickled_value() -> None:
    header, payload = run(lambda a, b=0: a * b, 6, b=7)
    assert header == {"status": "ok"}
    assert dill.loads(payload) == 42


def test_run_task_user_exception_skips_platform_frame() -> None:
    def boom() -> None:
        raise KeyError("k")

    header, payload = run(boom)
    assert header == {"status": "error", "cause": "KeyError: 'k'"}
    note = dill.loads(payload).__notes__[0]
    assert "in boom" in note and "run_task" not in note


def test_run_task_catches_system_exit() -> None:
    header, _ = run(sys.exit, 3)
    assert header == {"status": "error", "cause": "SystemExit: 3"}


def test_run_task_platform_failures() -> None:
    good_args = args_payload()
    cases = [
        (b"garbage", good_args, "DeserializationError", "cannot unpickle the function"),
        (dill.dumps(len), b"garbage", "DeserializationError", "cannot unpickle the arguments"),
        (dill.dumps(42), good_args, "InvalidTask", "not a callable"),
        (dill.dumps(len), dill.dumps([1, 2, 3]), "InvalidTask", "(args, kwargs) pair"),
        (dill.dumps(len), dill.dumps(((), [])), "InvalidTask", "(tuple, list)"),
        (dill.dumps(len), dill.dumps(((), {1: 2})), "InvalidTask", "must be strings"),
    ]
    for fn_payload, a_payload, kind, text in cases:
        header, payload = fe.run_task(fn_payload, a_payload, "", dill.dumps, dill.loads)
        assert header["status"] == "platform" and header["kind"] == kind, header
        assert text in header["detail"], header
        assert payload == b""


def test_run_task_unpicklable_result() -> None:
    header, _ = run(lambda: (i for i in range(2)))
    assert header["kind"] == "SerializationError"
    assert "generator" in header["detail"]


def test_oversized_result_is_a_serialization_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fe, "MAX_FRAME", 100)
    header, _ = run(lambda: b"x" * 200)
    assert header["kind"] == "SerializationError" and "more than the limit of 100" in header["detail"]


def test_memory_error_under_limit_is_a_resource_failure() -> None:
    def hog() -> None:
        raise MemoryError()

    header, _ = run(hog, limits=fe.Limits(memory_limit_mb=64))
    assert header == {
        "status": "platform",
        "kind": "ResourceLimitExceeded",
        "detail": "task exceeded the memory limit of 64 MiB (MemoryError)",
    }
    header, _ = run(hog)
    assert header["status"] == "error" and header["cause"] == "MemoryError"


def test_function_cache_is_lru_and_used_by_run_task() -> None:
    cache = fe.FunctionCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
    fe.FunctionCache(0).put("x", 1)

    calls = fe.FunctionCache(4)
    header, _ = run(lambda: "first", cache=calls)
    assert header == {"status": "ok"}
    # Same id, different payload: the cached function wins (ids name immutable functions).
    _, payload = run(lambda: "second", cache=calls)
    assert dill.loads(payload) == "first"


def test_limit_failures_name_the_limit() -> None:
    import errno

    limits = fe.Limits(memory_limit_mb=8, process_limit=4, open_files_limit=32, file_size_limit_mb=2)
    cases = [
        (OSError(errno.EFBIG, "File too large"), "task exceeded the file size limit of 2 MiB (OSError: [Errno 27] File too large)"),
        (OSError(errno.EMFILE, "Too many open files"), "task exceeded the open files limit of 32 (OSError: [Errno 24] Too many open files)"),
    ]
    for exc, detail in cases:
        assert fe.limit_exceeded(exc, limits) == detail
        assert fe.limit_exceeded(exc, fe.Limits()) is None  # no limit configured: the user's error

    marked = BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    assert fe.limit_exceeded(marked, limits) is None  # EAGAIN alone may be non-blocking I/O
    setattr(marked, fe.PROCESS_LIMIT_MARK, True)
    assert "process limit of 4" in (fe.limit_exceeded(marked, limits) or "")

    def wrapped() -> None:
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as e:
            raise RuntimeError("could not save") from e

    header, _ = run(wrapped, limits=limits)
    assert header["status"] == "platform" and header["kind"] == "ResourceLimitExceeded"
    assert "file size limit of 2 MiB" in header["detail"]


def test_guarded_fork_marks_eagain(monkeypatch: pytest.MonkeyPatch) -> None:
    import _posixsubprocess
    import _thread
    import threading

    def refuse(*_a: Any, **_k: Any) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    for mod, name in [(os, "fork"), (_posixsubprocess, "fork_exec"), (_thread, "start_new_thread"), (threading, "_start_new_thread")]:
        monkeypatch.setattr(mod, name, getattr(mod, name))  # restored after the test
    monkeypatch.setattr(os, "fork", refuse)
    fe.guard_process_creation()
    with pytest.raises(BlockingIOError) as info:
        os.fork()
    assert getattr(info.value, fe.PROCESS_LIMIT_MARK) is True


def test_set_title_replaces_the_command_line() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import faas_executor as fe; "
        "fe.set_title('faas-executor: test ' + 'x' * 10); "
        "print(open('/proc/self/cmdline', 'rb').read().decode().rstrip(chr(0)), open('/proc/self/comm').read().strip())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent), "padding " * 20],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "faas-executor: test xxxxxxxxxx faas-executor"


def test_private_dirs_are_created_and_removed(tmp_path: Path) -> None:
    d = fe.make_private_dir(str(tmp_path), "faas-task-")
    assert Path(d).parent == tmp_path and os.stat(d).st_mode & 0o777 == 0o700
    locked = Path(d, "sub")
    locked.mkdir()
    Path(locked, "f").write_text("x")
    locked.chmod(0)  # a task may leave directories it cannot enter itself
    fe.remove_tree(d)
    assert not Path(d).exists()


# --- the executor as a process ----------------------------------------------------------------


def start_executor(opts: dict[str, Any]) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Starts the executor as Rust does: isolated, the loader in argv, script and options framed
    on the control socket."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", LOADER.read_text(), str(theirs.fileno())],
        pass_fds=[theirs.fileno()], cwd="/",
    )
    theirs.close()
    fe.send_frames(ours, SCRIPT.read_bytes(), json.dumps({"workdir": tempfile.gettempdir(), **opts}).encode())
    return proc, ours


def read_json(stream: Any) -> dict[str, Any]:
    frame = fe.read_frame(stream)
    assert frame is not None
    return json.loads(frame)  # type: ignore[no-any-return]


def submit(ctrl: socket.socket, seq: int, fn: Any, *args: Any) -> socket.socket:
    ours, theirs = socket.socketpair()
    msg = {"op": "run", "seq": seq, "task_id": f"t{seq}"}
    socket.send_fds(ctrl, [fe.encode_frame(json.dumps(msg).encode())], [theirs.fileno()])
    theirs.close()
    fe.send_frames(ours, b'{"task_id":"t","function_id":"f"}', dill.dumps(fn), args_payload(*args))
    return ours


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0")


def test_zygote_runs_tasks_reports_exits_and_stops_on_eof() -> None:
    proc, ctrl = start_executor({"mode": "zygote", "pythonpath": [HERE]})
    events = ctrl.makefile("rb")
    try:
        ready = read_json(events)
        assert ready["op"] == "ready" and ready["pid"] == proc.pid
        assert cmdline(proc.pid) == "faas-executor: zygote"

        task = submit(ctrl, 1, lambda x: (x + 1, os.getcwd()), 41)
        started = read_json(events)
        assert started["op"] == "started" and started["seq"] == 1
        result = task.makefile("rb")
        assert json.loads(fe.read_frame(result) or b"") == {"status": "ok"}
        value, cwd = dill.loads(fe.read_frame(result) or b"")
        assert value == 42 and Path(cwd).name.startswith("faas-task-")
        exited = read_json(events)
        assert exited == {"op": "exited", "seq": 1, "pid": started["pid"], "status": 0}
        assert not Path(cwd).exists(), "the task's directory is removed once it was reaped"

        crash = submit(ctrl, 2, lambda: os.kill(os.getpid(), signal.SIGKILL))
        assert read_json(events)["op"] == "started"
        exited = read_json(events)
        assert os.WIFSIGNALED(exited["status"]) and os.WTERMSIG(exited["status"]) == signal.SIGKILL
        assert crash.recv(1) == b""  # no result, just EOF

        sleeper = submit(ctrl, 3, time.sleep, 60)
        child = read_json(events)["pid"]
        deadline = time.monotonic() + 5
        while cmdline(child) != "faas-executor: task t3" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cmdline(child) == "faas-executor: task t3"
    finally:
        events.close()  # the file object shares the socket: close both to send EOF
        ctrl.close()  # EOF: the zygote kills its children and exits
    assert proc.wait(timeout=10) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    sleeper.close()


def test_executor_reports_fatal_start_errors() -> None:
    proc, ctrl = start_executor({"mode": "zygote", "preload": ["no_such_module_xyz"]})
    with ctrl:
        msg = read_json(ctrl.makefile("rb"))
    assert msg["op"] == "fatal" and "no_such_module_xyz" in msg["error"]
    assert proc.wait(timeout=10) == 1
    proc, ctrl = start_executor({"mode": "reuse", "workdir": "/nonexistent/dir"})
    with ctrl:
        msg = read_json(ctrl.makefile("rb"))
    assert msg["op"] == "fatal" and "not writable" in msg["error"]
    assert proc.wait(timeout=10) == 1


def test_reuse_process_keeps_forked_copies_off_the_socket() -> None:
    proc, ctrl = start_executor({"mode": "reuse", "pythonpath": [HERE]})
    stream = ctrl.makefile("rb")
    try:
        ready = read_json(stream)
        assert Path(ready["workdir"]).name.startswith("faas-reuse-")
        # The user's code forks and lets the child return: only the parent may answer.
        fe.send_frames(ctrl, b'{"task_id":"t","function_id":""}', dill.dumps(lambda: os.fork() and "parent"), args_payload())
        assert json.loads(fe.read_frame(stream) or b"") == {"status": "ok"}
        assert dill.loads(fe.read_frame(stream) or b"") == "parent"
        fe.send_frames(ctrl, b'{"task_id":"t2","function_id":""}', dill.dumps(lambda: "next"), args_payload())
        assert json.loads(fe.read_frame(stream) or b"") == {"status": "ok"}
        assert dill.loads(fe.read_frame(stream) or b"") == "next"
    finally:
        stream.close()
        ctrl.close()
    assert proc.wait(timeout=10) == 0
    assert not Path(ready["workdir"]).exists(), "removed when the process stops"


def test_fast_codec_writes_what_dill_writes_and_reads_what_dill_reads() -> None:
    dumps, loads = fe.fast_codec(dill.dumps, dill.loads, dill.settings["protocol"])
    plain = [None, True, 0, -1, 2**100, 1.5, float("inf"), "", "é" * 3, b"\x00c\x93", (), [], {},
             {"sum": 5}, (1, "a", None), [[1, [2, [3]]], {"k": (b"v",)}], ((), {"x": 1})]
    for v in plain:
        assert fe.is_plain(v), v
        assert dumps(v) == dill.dumps(v), v
        assert loads(dill.dumps(v)) == v
    # Not plain data: dill's way (by value for __main__ objects), and the round trip holds.
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    not_plain = [Point(1), [Point(2)], {1, 2}, lambda: 1, ValueError("x"), list(range(100)), True.__class__]
    for v in not_plain:
        assert not fe.is_plain(v), v
    assert dumps(not_plain[0]) == dill.dumps(not_plain[0])
    assert loads(dumps(not_plain[0])).x == 1
    assert loads(dumps(lambda a: a + 1))(1) == 2
    assert loads(dumps(list(range(100)))) == list(range(100))
    # A pickle that names a global never takes the C path, even without a GLOBAL byte elsewhere.
    assert fe.CALLS_SOMETHING.search(dill.dumps(Point)) is not None
