"""faas executor: runs dill-pickled Python functions on behalf of the Rust executor pool.

The Rust side (src/executor/) embeds this file and starts it with a bootstrap,
``python -c BOOTSTRAP MODE OPTIONS_JSON``, that executes it as module ``faas_executor`` (so
``__main__`` stays empty for users' functions) and calls :func:`main`. The control socket's fd
number is in the environment variable ``FAAS_EXECUTOR_FD``. stdout/stderr are never used for the protocol, so a
user's ``print()`` cannot corrupt it.

Modes:

``zygote``
    A warm, single-threaded process with dill (and the ``preload`` modules) imported. It never
    runs user code: for every ``run`` control message it receives a task socket (SCM_RIGHTS) and
    forks a child that reads the task from that socket, runs it, writes the result back on it and
    exits. The zygote reaps its children and reports ``started``/``exited`` (with the raw wait
    status) on the control socket. When the control socket reaches EOF, it kills every child's
    process group and exits.
``reuse``
    Runs tasks one after another in this process, reading tasks from and writing results to the
    control socket. Deserialized functions are cached by function id (LRU).

Wire format: every message is a sequence of frames, each a 4-byte big-endian length followed by
that many bytes. Control messages are one JSON frame. A task is three frames (JSON header,
function pickle, arguments pickle); a result is two frames (JSON header, pickle or empty).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import traceback
from collections import OrderedDict, deque
from typing import Any, BinaryIO, Callable, Optional

FRAME_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
FD_ENV = "FAAS_EXECUTOR_FD"
PR_SET_PDEATHSIG = 1
EXIT_PROTOCOL = 70

Header = dict[str, Any]
Result = tuple[Header, bytes]


class FrameError(Exception):
    """A frame violated the wire format (too long, or the stream ended inside it)."""


class TaskFailure(Exception):
    """A failure the platform reports itself, e.g. ``DeserializationError``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# ----------------------------------------------------------------------------------------------
# Framing (pure helpers)


def encode_frame(body: bytes) -> bytes:
    """Returns ``body`` prefixed with its 4-byte big-endian length."""
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the limit of {MAX_FRAME}")
    return FRAME_HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= FRAME_HEADER.size:
            (length,) = FRAME_HEADER.unpack_from(self._buf)
            if length > self._max:
                raise FrameError(f"frame of {length} bytes exceeds the limit of {self._max}")
            end = FRAME_HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[FRAME_HEADER.size : end]))
            del self._buf[:end]
        return frames

    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)


def read_exact(stream: BinaryIO, n: int) -> Optional[bytes]:
    """Reads exactly ``n`` bytes; ``None`` on EOF before the first byte, FrameError on a short read."""
    data = stream.read(n)
    if not data and n > 0:
        return None
    if len(data) < n:
        raise FrameError(f"stream ended after {len(data)} of {n} bytes")
    return data


def read_frame(stream: BinaryIO) -> Optional[bytes]:
    """Reads one frame from a buffered stream; ``None`` on a clean EOF between frames."""
    head = read_exact(stream, FRAME_HEADER.size)
    if head is None:
        return None
    (length,) = FRAME_HEADER.unpack(head)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
    if length == 0:
        return b""
    body = read_exact(stream, length)
    if body is None:
        raise FrameError("stream ended inside a frame")
    return body


def send_frames(sock: socket.socket, *bodies: bytes) -> None:
    """Writes ``bodies`` as consecutive frames: small ones in one call, large ones uncopied."""
    small: list[bytes] = []
    for body in bodies:
        if len(body) < 65536:
            small.append(encode_frame(body))
            continue
        if len(body) > MAX_FRAME:
            raise FrameError(f"frame of {len(body)} bytes exceeds the limit of {MAX_FRAME}")
        small.append(FRAME_HEADER.pack(len(body)))
        sock.sendall(b"".join(small))
        small.clear()
        sock.sendall(body)
    if small:
        sock.sendall(b"".join(small))


def send_json(sock: socket.socket, msg: Header) -> None:
    send_frames(sock, json.dumps(msg, separators=(",", ":")).encode())


# ----------------------------------------------------------------------------------------------
# Running a task (pure apart from calling the user's function)


def one_line(text: str, limit: int = 500) -> str:
    """First line of ``text``, shortened to ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"`` (or just the type name), robust against a failing ``__str__``."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - user __str__ may raise anything
        text = f"<unprintable {name} object>"
    return f"{name}: {text}" if text else name


def format_remote_traceback(exc: BaseException, skip_frames: int = 0) -> str:
    """The traceback text of ``exc``, without its first ``skip_frames`` (platform) frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001
        return describe_exception(exc) + "\n"


def package_exception(
    exc: BaseException,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    skip_frames: int = 0,
) -> Result:
    """Pickles a user's exception with its remote traceback attached as a note.

    If the exception does not survive a pickle round trip, returns a ``foreign_error`` header
    (type name plus text with the traceback) from which the Rust side builds a plain exception.
    """
    cause = one_line(describe_exception(exc))
    tb_text = format_remote_traceback(exc, skip_frames)
    note = "Remote traceback:\n" + tb_text
    try:
        exc.add_note(note)
        payload = dumps(exc)
        loads(payload)
        return {"status": "error", "cause": cause}, payload
    except BaseException as pickling_error:  # noqa: BLE001 - anything may fail in user classes
        return {
            "status": "foreign_error",
            "type": type(exc).__name__,
            "message": f"{describe_exception(exc)}\n\n{note}",
            "cause": cause,
            "detail": one_line(describe_exception(pickling_error)),
        }, b""


def platform_result(kind: str, detail: str) -> Result:
    return {"status": "platform", "kind": kind, "detail": detail}, b""


class FunctionCache:
    """LRU cache of deserialized functions, keyed by function id (reuse mode)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Optional[Any]:
        fn = self._items.get(key)
        if fn is not None:
            self._items.move_to_end(key)
        return fn

    def put(self, key: str, fn: Any) -> None:
        if self.size <= 0 or not key:
            return
        self._items[key] = fn
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def load_function(
    fn_payload: bytes,
    function_id: str,
    loads: Callable[[bytes], Any],
    cache: Optional[FunctionCache],
) -> Any:
    fn = cache.get(function_id) if cache is not None and function_id else None
    if fn is not None:
        return fn
    try:
        fn = loads(fn_payload)
    except MemoryError:
        raise
    except BaseException as e:  # noqa: BLE001 - unpickling may raise anything
        raise TaskFailure("DeserializationError", f"cannot unpickle the function: {one_line(describe_exception(e))}") from None
    if not callable(fn):
        raise TaskFailure("InvalidTask", f"the function payload is a {type(fn).__name__}, not a callable")
    if cache is not None:
        cache.put(function_id, fn)
    return fn


def load_arguments(args_payload: bytes, loads: Callable[[bytes], Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        value = loads(args_payload)
    except MemoryError:
        raise
    except BaseException as e:  # noqa: BLE001
        raise TaskFailure("DeserializationError", f"cannot unpickle the arguments: {one_line(describe_exception(e))}") from None
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TaskFailure("InvalidTask", f"the arguments payload must be an (args, kwargs) pair, got {type(value).__name__}")
    args, kwargs = value
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise TaskFailure(
            "InvalidTask",
            f"the arguments payload must be an (args, kwargs) pair, got ({type(args).__name__}, {type(kwargs).__name__})",
        )
    if not all(isinstance(k, str) for k in kwargs):
        raise TaskFailure("InvalidTask", "keyword argument names must be strings")
    return tuple(args), kwargs


def run_task(
    fn_payload: bytes,
    args_payload: bytes,
    function_id: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    memory_limit_mb: int = 0,
    cache: Optional[FunctionCache] = None,
) -> Result:
    """Deserializes and calls the function; returns the result header and pickle."""
    try:
        fn = load_function(fn_payload, function_id, loads, cache)
        args, kwargs = load_arguments(args_payload, loads)
        try:
            value = fn(*args, **kwargs)
        except MemoryError:
            raise
        except BaseException as e:  # noqa: BLE001 - user code may raise anything, even SystemExit
            return package_exception(e, dumps, loads, skip_frames=1)
        try:
            payload = dumps(value)
        except MemoryError:
            raise
        except BaseException as e:  # noqa: BLE001
            raise TaskFailure(
                "SerializationError",
                f"cannot pickle the return value of type {type(value).__name__}: {one_line(describe_exception(e))}",
            ) from None
        if len(payload) > MAX_FRAME:
            raise TaskFailure(
                "SerializationError", f"the pickled return value has {len(payload)} bytes, more than the limit of {MAX_FRAME}"
            )
        return {"status": "ok"}, payload
    except TaskFailure as f:
        return platform_result(f.kind, f.detail)
    except MemoryError as e:
        if memory_limit_mb > 0:
            return platform_result(
                "ResourceLimitExceeded", f"task exceeded the memory limit of {memory_limit_mb} MiB (MemoryError)"
            )
        return package_exception(e, dumps, loads)


# ----------------------------------------------------------------------------------------------
# Process plumbing


def load_prctl() -> Callable[..., int]:
    """Returns libc's ``prctl`` (loaded once in the zygote, so children need not import ctypes)."""
    import ctypes

    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def set_pdeathsig(sig: int, prctl: Optional[Callable[..., int]] = None) -> None:
    """Asks the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    import ctypes

    if (prctl or load_prctl())(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_memory_limit(memory_limit_mb: int) -> None:
    if memory_limit_mb > 0:
        import resource  # imported by the zygote already when a limit is configured

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the exit
            pass


def read_task(stream: BinaryIO) -> Optional[tuple[Header, bytes, bytes]]:
    header = read_frame(stream)
    if header is None:
        return None
    fn_payload = read_frame(stream)
    args_payload = read_frame(stream)
    if fn_payload is None or args_payload is None:
        raise FrameError("stream ended inside a task message")
    return json.loads(header), fn_payload, args_payload


def write_result(sock: socket.socket, result: Result) -> None:
    header, payload = result
    send_frames(sock, json.dumps(header, separators=(",", ":")).encode(), payload)


def clean_main_namespace() -> None:
    """Leaves ``__main__`` as empty as in a fresh interpreter (the bootstrap defined names there)."""
    import __main__

    if vars(__main__) is globals():
        return  # run directly as a script: __main__ is this module
    keep = {"__name__", "__doc__", "__package__", "__loader__", "__spec__", "__builtins__", "__annotations__"}
    for name in list(vars(__main__)):
        if name not in keep:
            delattr(__main__, name)


def import_runtime(preload: list[str]) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """Imports dill and the ``preload`` modules; binds each preloaded top-level package in
    ``__main__`` so functions pickled from a client's ``__main__`` find it as a global."""
    import importlib

    import __main__
    import dill  # type: ignore[import-untyped]

    for name in preload:
        importlib.import_module(name)
        top = name.split(".")[0]
        setattr(__main__, top, sys.modules[top])
    return dill.dumps, dill.loads


def dill_version() -> str:
    """The version of the dill that :func:`import_runtime` imported (reported in ``ready``)."""
    return str(getattr(sys.modules.get("dill"), "__version__", ""))


class Zygote:
    """Forks one child per task; never runs user code itself."""

    def __init__(self, ctrl: socket.socket, opts: Header, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
        self.ctrl = ctrl
        self.opts = opts
        self.dumps = dumps
        self.loads = loads
        self.children: dict[int, int] = {}
        self.decoder = FrameDecoder()
        self.fds: deque[int] = deque()
        self.pid = os.getpid()
        self.prctl = load_prctl()
        if int(opts.get("memory_limit_mb", 0)) > 0:
            import resource  # noqa: F401 - warm the import for the children

        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        import gc
        import select

        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
        signal.set_wakeup_fd(self.wake_w)
        send_json(self.ctrl, {"op": "ready", "pid": self.pid, "python": sys.version.split()[0], "dill": dill_version()})
        gc.freeze()
        while True:
            readable, _, _ = select.select([self.ctrl.fileno(), self.wake_r], [], [])
            if self.wake_r in readable:
                self._drain_wakeup()
                self.reap()
            if self.ctrl.fileno() in readable:
                data, fds, _flags, _addr = socket.recv_fds(self.ctrl, 65536, 16)
                self.fds.extend(fds)
                if not data:
                    self.stop()
                    return
                for frame in self.decoder.feed(data):
                    self.handle(json.loads(frame))

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def handle(self, msg: Header) -> None:
        if msg.get("op") != "run":
            sys.stderr.write(f"faas zygote: ignoring unknown message {msg!r}\n")
            return
        seq = int(msg["seq"])
        if not self.fds:
            send_json(self.ctrl, {"op": "spawn_failed", "seq": seq, "error": "run message without a task socket"})
            return
        task_fd = self.fds.popleft()
        flush_std_streams()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(task_fd)
            send_json(self.ctrl, {"op": "spawn_failed", "seq": seq, "error": f"fork failed: {e}"})
            return
        if pid == 0:
            self.child(task_fd)  # never returns
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child already did it (or is gone; reaping will tell)
        os.close(task_fd)
        self.children[pid] = seq
        send_json(self.ctrl, {"op": "started", "seq": seq, "pid": pid})

    def child(self, task_fd: int) -> None:
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.wake_r, self.wake_w, *self.fds):
                os.close(fd)
            self.ctrl.close()
            os.setpgid(0, 0)
            set_pdeathsig(signal.SIGKILL, self.prctl)
            if os.getppid() != self.pid:
                os._exit(EXIT_PROTOCOL)
            memory_limit_mb = int(self.opts.get("memory_limit_mb", 0))
            set_memory_limit(memory_limit_mb)
            sock = socket.socket(fileno=task_fd)
            task = read_task(sock.makefile("rb"))
            if task is None:
                code = EXIT_PROTOCOL
            else:
                header, fn_payload, args_payload = task
                result = run_task(fn_payload, args_payload, str(header.get("function_id", "")), self.dumps, self.loads, memory_limit_mb)
                write_result(sock, result)
        except BaseException:  # noqa: BLE001 - report and exit, never return into the zygote loop
            code = EXIT_PROTOCOL
            try:
                traceback.print_exc()
            except BaseException:  # noqa: BLE001
                pass
        finally:
            flush_std_streams()
            os._exit(code)

    def reap(self) -> None:
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            try:
                # The zombie still holds its group id, so this cannot hit an unrelated group.
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            _, status = os.waitpid(pid, 0)
            seq = self.children.pop(pid, None)
            if seq is not None:
                send_json(self.ctrl, {"op": "exited", "seq": seq, "pid": pid, "status": status})

    def stop(self) -> None:
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()


def serve_reuse(ctrl: socket.socket, opts: Header, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
    cache = FunctionCache(int(opts.get("function_cache_size", 256)))
    memory_limit_mb = int(opts.get("memory_limit_mb", 0))
    send_json(ctrl, {"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0], "dill": dill_version()})
    stream = ctrl.makefile("rb")
    while True:
        task = read_task(stream)
        if task is None:
            return
        header, fn_payload, args_payload = task
        result = run_task(fn_payload, args_payload, str(header.get("function_id", "")), dumps, loads, memory_limit_mb, cache)
        flush_std_streams()
        write_result(ctrl, result)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("zygote", "reuse"):
        sys.stderr.write("usage: faas_executor.py zygote|reuse [OPTIONS_JSON]  (fd in $FAAS_EXECUTOR_FD)\n")
        return 64
    opts: Header = json.loads(argv[2]) if len(argv) > 2 else {}
    clean_main_namespace()
    ctrl = socket.socket(fileno=int(os.environ[FD_ENV]))
    os.environ.pop(FD_ENV, None)
    try:
        dumps, loads = import_runtime([str(m) for m in opts.get("preload", [])])
    except BaseException as e:  # noqa: BLE001 - report why start-up failed, then exit
        send_json(ctrl, {"op": "fatal", "error": one_line(describe_exception(e))})
        return 1
    if argv[1] == "zygote":
        Zygote(ctrl, opts, dumps, loads).serve()
    else:
        serve_reuse(ctrl, opts, dumps, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
