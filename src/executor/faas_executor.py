"""faas executor: runs dill-pickled Python functions on behalf of the Rust executor pool.

The Rust side (this directory) embeds this file. It starts the interpreter isolated, as
``python -I -c LOADER FD`` (``faas_executor_loader.py``): the loader receives this script and then
an options frame (JSON) on the control socket (fd ``FD``), executes the script as module
``faas_executor`` (so ``__main__`` stays empty for users' functions) and calls :func:`main`, which
renames the process (``faas-executor: zygote`` / ``reuse``, children ``faas-executor: task ID``).
stdout/stderr are never used for the protocol, so a user's ``print()`` cannot corrupt it.

The process already runs as the executor user with the allowlisted environment (set up by Rust
between fork and exec). This side adds what differs per task: a private working directory
(``HOME`` and ``TMPDIR`` too), removed afterwards, and the resource limits. A limit that ends a
task ends it with ``ResourceLimitExceeded`` naming the limit.

Modes:

``zygote``
    A warm, single-threaded process with dill (and the ``preload`` modules) imported. It never
    runs user code. It forks ahead: one spare child is always forked and set up (process group,
    parent-death signal, private directory, limits) and waits for a task. For every ``run``
    control message the zygote receives a task socket (SCM_RIGHTS) and passes it on to the spare,
    which reads the task from that socket, runs it, writes the result back on it and exits; then
    the zygote forks the next spare. The zygote reaps its children, removes their directories
    and reports ``started``/``exited`` (with the raw wait status) on the control socket; a spare
    that dies unused is replaced without a report. When the control socket reaches EOF, it kills
    every child's process group and exits.
``reuse``
    Runs tasks one after another in this process (in one private directory), reading tasks from
    and writing results to the control socket. Deserialized functions are cached by function id
    (LRU).

Wire format: every message is a sequence of frames, each a 4-byte big-endian length followed by
that many bytes. Control messages are one JSON frame. A task is three frames (JSON header,
function pickle, arguments pickle); a result is two frames (JSON header, pickle or empty).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import struct
import sys
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Optional

FRAME_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
EXIT_PROTOCOL = 70
TITLE = "faas-executor"
# Set on the exception when creating a process or thread failed (see guard_process_creation).
PROCESS_LIMIT_MARK = "_faas_process_limit"

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


@dataclass(frozen=True)
class Limits:
    """Per-task resource limits (0 = none); see ``executor.*_limit*`` in the configuration."""

    memory_limit_mb: int = 0
    process_limit: int = 0
    open_files_limit: int = 0
    file_size_limit_mb: int = 0

    @classmethod
    def from_options(cls, opts: Header) -> "Limits":
        return cls(**{name: int(opts.get(name, 0) or 0) for name in cls.__dataclass_fields__})


def exception_chain(exc: BaseException, depth: int = 8) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (bounded, cycle-safe)."""
    seen: set[int] = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen and len(seen) < depth:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def limit_exceeded(exc: BaseException, limits: Limits) -> Optional[str]:
    """The ``ResourceLimitExceeded`` detail when ``exc`` comes from one of the task's limits."""
    for e in exception_chain(exc):
        what = describe_exception(e)
        if isinstance(e, MemoryError) and limits.memory_limit_mb > 0:
            return f"task exceeded the memory limit of {limits.memory_limit_mb} MiB (MemoryError)"
        if isinstance(e, OSError) and e.errno == errno.EFBIG and limits.file_size_limit_mb > 0:
            return f"task exceeded the file size limit of {limits.file_size_limit_mb} MiB ({one_line(what)})"
        if isinstance(e, OSError) and e.errno == errno.EMFILE and limits.open_files_limit > 0:
            return f"task exceeded the open files limit of {limits.open_files_limit} ({one_line(what)})"
        if getattr(e, PROCESS_LIMIT_MARK, False) and limits.process_limit > 0:
            return (
                f"task exceeded the process limit of {limits.process_limit} processes and threads of the "
                f"executor user ({one_line(what)})"
            )
    return None


def run_task(
    fn_payload: bytes,
    args_payload: bytes,
    function_id: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    limits: Limits = Limits(),
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
            detail = limit_exceeded(e, limits)
            if detail is not None:
                return platform_result("ResourceLimitExceeded", detail)
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
        detail = limit_exceeded(e, limits)
        if detail is not None:
            return platform_result("ResourceLimitExceeded", detail)
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


def set_title(title: str, prctl: Optional[Callable[..., int]] = None) -> None:
    """Shows ``title`` as this process's command line (``ps``, ``systemctl status``) and
    ``faas-executor`` as its name.

    The command line is the memory between ``arg_start`` and ``arg_end`` (/proc/self/stat). The
    title and a NUL are written there and the rest is filled with spaces: when the last byte of
    that area is not NUL, the kernel shows it up to the first NUL, i.e. exactly the title.
    Best effort: a failure leaves the old command line.
    """
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    except (OSError, ValueError, IndexError):
        return
    size = end - start
    if size < 2:
        return
    text = title.encode("utf-8", "replace")[: size - 2] + b"\0"
    ctypes.memmove(start, text + b" " * (size - len(text)), size)
    (prctl or load_prctl())(PR_SET_NAME, ctypes.c_char_p(TITLE.encode()), 0, 0, 0)


def set_not_dumpable(prctl: Optional[Callable[..., int]] = None) -> None:
    """No core dumps, and no ptrace or /proc/PID/{mem,environ,fd} access by other processes of
    the executor user (e.g. another task)."""
    (prctl or load_prctl())(PR_SET_DUMPABLE, 0, 0, 0, 0)


def prefer_oom_kill() -> None:
    """Makes the kernel's OOM killer pick executors before the daemon (raising is unprivileged)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass


def apply_limits(limits: Limits) -> None:
    """Sets this process's resource limits (never raising a hard limit); no core dumps."""
    import resource  # imported by the zygote already, so children find it in sys.modules

    def lower(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    mib = 1024 * 1024
    if limits.memory_limit_mb > 0:
        lower(resource.RLIMIT_AS, limits.memory_limit_mb * mib)
    if limits.process_limit > 0:
        lower(resource.RLIMIT_NPROC, limits.process_limit)
    if limits.open_files_limit > 0:
        lower(resource.RLIMIT_NOFILE, limits.open_files_limit)
    if limits.file_size_limit_mb > 0:
        lower(resource.RLIMIT_FSIZE, limits.file_size_limit_mb * mib)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def guard_process_creation() -> None:
    """Marks the exceptions of failed process and thread creation (EAGAIN at RLIMIT_NPROC), so a
    task that ran into the process limit is reported as such rather than as a random
    ``BlockingIOError``. Wraps ``os.fork``, subprocess's ``fork_exec`` and thread start-up."""
    import _posixsubprocess
    import _thread
    import functools
    import threading

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (BlockingIOError, RuntimeError) as e:
                if isinstance(e, BlockingIOError) or "thread" in str(e):
                    try:
                        setattr(e, PROCESS_LIMIT_MARK, True)
                    except AttributeError:
                        pass
                raise

        return call

    os.fork = guarded(os.fork)
    _posixsubprocess.fork_exec = guarded(_posixsubprocess.fork_exec)  # type: ignore[attr-defined]
    _thread.start_new_thread = guarded(_thread.start_new_thread)
    threading._start_new_thread = guarded(threading._start_new_thread)  # type: ignore[attr-defined]


def make_private_dir(base: str, prefix: str) -> str:
    """A new directory only this user can enter, below ``base``, with an unguessable name
    (what ``tempfile.mkdtemp`` does, without its name generator's cost on the zygote's path)."""
    for _ in range(100):
        path = os.path.join(base, prefix + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return os.path.abspath(path)
    raise FileExistsError(errno.EEXIST, f"no unused directory name below {base}")


def enter_private_dir(path: str) -> None:
    """Makes ``path`` the working directory, ``HOME`` and ``TMPDIR``."""
    os.chdir(path)
    os.environ["HOME"] = path
    os.environ["TMPDIR"] = path
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # forget a temp dir chosen before


def remove_tree(path: str) -> None:
    """Removes a private directory, whatever permissions a task left inside it."""
    try:
        os.rmdir(path)  # most tasks leave it empty
        return
    except FileNotFoundError:
        return  # a forked task removed its own
    except OSError:
        pass
    import shutil
    import stat

    def retry(func: Callable[..., Any], p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p) or p, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    try:
        shutil.rmtree(path, onerror=retry)
    except OSError:
        pass


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the exit
            pass


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise FrameError(f"stream ended after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def recv_frame(sock: socket.socket) -> bytes:
    """Reads one frame straight from the socket (nothing buffered beyond it)."""
    (length,) = FRAME_HEADER.unpack(recv_exact(sock, FRAME_HEADER.size))
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
    return recv_exact(sock, length)


def read_task(stream: BinaryIO) -> Optional[tuple[Header, bytes, bytes]]:
    header = read_frame(stream)
    if header is None:
        return None
    fn_payload = read_frame(stream)
    args_payload = read_frame(stream)
    if fn_payload is None or args_payload is None:
        raise FrameError("stream ended inside a task message")
    return json.loads(header), fn_payload, args_payload


OK_HEADER = b'{"status":"ok"}'


def write_result(sock: socket.socket, result: Result) -> None:
    header, payload = result
    if header == {"status": "ok"}:
        send_frames(sock, OK_HEADER, payload)
    else:
        send_frames(sock, json.dumps(header, separators=(",", ":")).encode(), payload)


def clean_main_namespace() -> None:
    """Leaves ``__main__`` as empty as in a fresh interpreter (the loader defined names there)."""
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
    return fast_codec(dill.dumps, dill.loads, int(dill.settings.get("protocol", 4)))


# Plain data (no classes, functions or other globals): what the C pickler writes for it is what
# dill's pure-Python pickler writes, byte for byte, in a fraction of the time.
PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
# Opcodes that load a global or call something (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE, BUILD,
# NEWOBJ, NEWOBJ_EX, EXT1-4, PERSID, BINPERSID): a pickle without any of these bytes anywhere
# is plain data, which the C unpickler reads exactly like dill's. (Such a byte inside a string
# only sends the payload the slow way.)
CALLS_SOMETHING = re.compile(rb"[ciobRPQ\x81-\x84\x92\x93]")


def is_plain(value: Any, budget: int = 64) -> bool:
    """``value`` is built only from None, bool, int, float, str, bytes, tuples, lists and dicts,
    with at most ``budget`` items in all (larger values take dill's way, which is correct too)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in PLAIN_SCALARS:
            continue
        budget -= 1
        if budget < 0:
            return False
        if t is tuple or t is list:
            if len(v) > budget:
                return False
            stack.extend(v)
        elif t is dict:
            if len(v) > budget:
                return False
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            return False
    return True


def fast_codec(
    dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any], protocol: int
) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """``dumps``/``loads`` (dill's) with a fast path for plain data through the C pickle."""
    import pickle

    c_dumps, c_loads, search = pickle.dumps, pickle.loads, CALLS_SOMETHING.search

    def fast_dumps(value: Any) -> bytes:
        if is_plain(value):
            return c_dumps(value, protocol)
        return dumps(value)

    def fast_loads(payload: bytes) -> Any:
        if search(payload) is None:
            return c_loads(payload)
        return loads(payload)

    return fast_dumps, fast_loads


def dill_version() -> str:
    """The version of the dill that :func:`import_runtime` imported (reported in ``ready``)."""
    return str(getattr(sys.modules.get("dill"), "__version__", ""))


class Zygote:
    """Forks one child per task; never runs user code itself.

    Fork-ahead: one *spare* child is always forked and set up (process group, parent-death
    signal, private directory, limits) before a task arrives; it waits on its own socket for the
    task socket (SCM_RIGHTS) and the task id. A ``run`` hands the task to the spare (reported as
    ``started``) and forks the next spare after that, so fork and set-up are off the task's path.
    A spare that dies unused is reaped and replaced without any report.
    """

    def __init__(self, ctrl: socket.socket, opts: Header, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
        self.ctrl = ctrl
        self.dumps = dumps
        self.loads = loads
        self.limits = Limits.from_options(opts)
        self.workdir = str(opts.get("workdir") or "/tmp")
        self.children: dict[int, tuple[int, str]] = {}
        # The spare child: pid, our end of its hand-over socket, its private directory.
        self.spare: Optional[tuple[int, socket.socket, str]] = None
        # Spares that died (or were found dead) before use: pid -> directory, reaped silently.
        self.lost_spares: dict[int, str] = {}
        self.decoder = FrameDecoder()
        self.fds: deque[int] = deque()
        self.pid = os.getpid()
        self.prctl = load_prctl()
        import resource  # noqa: F401 - warm the imports for the children
        import shutil  # noqa: F401
        import tempfile  # noqa: F401

        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        import select

        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
        signal.set_wakeup_fd(self.wake_w)
        send_json(self.ctrl, {"op": "ready", "pid": self.pid, "python": sys.version.split()[0], "dill": dill_version()})
        self.fork_spare()
        ctrl_fd = self.ctrl.fileno()
        while True:
            readable, _, _ = select.select([ctrl_fd, self.wake_r], [], [])
            if self.wake_r in readable:
                self._drain_wakeup()
                self.reap()
            if ctrl_fd in readable:
                data, fds, _flags, _addr = socket.recv_fds(self.ctrl, 65536, 16)
                self.fds.extend(fds)
                if not data:
                    self.stop()
                    return
                for frame in self.decoder.feed(data):
                    self.handle(json.loads(frame))
            if self.spare is None:
                self.fork_spare()

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def fork_spare(self) -> Optional[str]:
        """Forks and sets up the next spare child; returns why it failed, if it did."""
        import gc

        # The child creates its directory (an unguessable name, created exclusively), off the
        # zygote's path; the zygote knows the name to remove it after the child.
        workdir = os.path.join(self.workdir, "faas-task-" + os.urandom(8).hex())
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            return f"cannot create the hand-over socket: {e}"
        flush_std_streams()
        gc.freeze()  # what exists now is shared with the child and never touched by its GC
        try:
            pid = os.fork()
        except OSError as e:
            ours.close()
            theirs.close()
            return f"fork failed: {e}"
        if pid == 0:
            ours.close()
            self.child(theirs, workdir)  # never returns
        theirs.close()
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child already did it (or is gone; reaping will tell)
        self.spare = (pid, ours, workdir)
        return None

    def handle(self, msg: Header) -> None:
        if msg.get("op") != "run":
            sys.stderr.write(f"faas zygote: ignoring unknown message {msg!r}\n")
            return
        seq = int(msg["seq"])
        if not self.fds:
            send_json(self.ctrl, {"op": "spawn_failed", "seq": seq, "error": "run message without a task socket"})
            return
        task_fd = self.fds.popleft()
        task_id = str(msg.get("task_id", "")).encode("utf-8", "replace")[:200] or b"-"
        error = None
        for _ in range(2):  # a spare found dead is replaced once
            if self.spare is None:
                error = self.fork_spare()
                if error is not None:
                    break
            assert self.spare is not None
            pid, hand, workdir = self.spare
            self.spare = None
            try:
                socket.send_fds(hand, [task_id], [task_fd])
            except OSError as e:
                hand.close()
                self.lost_spares[pid] = workdir
                error = f"the forked child died before its task: {e}"
                continue
            hand.close()
            os.close(task_fd)
            self.children[pid] = (seq, workdir)
            send_json(self.ctrl, {"op": "started", "seq": seq, "pid": pid})
            return
        os.close(task_fd)
        send_json(self.ctrl, {"op": "spawn_failed", "seq": seq, "error": error})

    def child(self, hand: socket.socket, workdir: str) -> None:
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
            set_title(f"{TITLE}: spare", self.prctl)
            os.mkdir(workdir, 0o700)  # fails if the name exists: this spare dies unused
            enter_private_dir(workdir)
            apply_limits(self.limits)
            if self.limits.process_limit > 0:
                guard_process_creation()
            # Set up: wait for the task (an empty read: the zygote stopped or dropped us).
            task_id, fds, _flags, _addr = socket.recv_fds(hand, 4096, 1)
            hand.close()
            if not fds:
                os._exit(0)
            set_title(f"{TITLE}: task {task_id.decode('utf-8', 'replace')}", self.prctl)
            sock = socket.socket(fileno=fds[0])
            task = read_task(sock.makefile("rb"))
            if task is None:
                code = EXIT_PROTOCOL
            else:
                header, fn_payload, args_payload = task
                function_id = str(header.get("function_id", ""))
                me = os.getpid()
                result = run_task(fn_payload, args_payload, function_id, self.dumps, self.loads, self.limits)
                if os.getpid() == me:  # not a process the user's code forked and let return
                    write_result(sock, result)
                    try:
                        # Off the zygote's path: it only finds the directory gone when it reaps
                        # (or removes what the task left in it).
                        os.rmdir(workdir)
                    except OSError:
                        pass
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
        while True:
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
            entry = self.children.pop(pid, None)
            if entry is not None:
                seq, workdir = entry
                remove_tree(workdir)
                send_json(self.ctrl, {"op": "exited", "seq": seq, "pid": pid, "status": status})
                continue
            if self.spare is not None and self.spare[0] == pid:
                _, hand, workdir = self.spare
                self.spare = None
                hand.close()
                remove_tree(workdir)
                sys.stderr.write(f"faas zygote: spare child {pid} died unused (wait status {status}); replacing it\n")
                continue
            workdir = self.lost_spares.pop(pid, "")
            if workdir:
                remove_tree(workdir)

    def stop(self) -> None:
        spare = [self.spare[0]] if self.spare is not None else []
        for pid in [*self.children, *spare, *self.lost_spares]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        dirs = {pid: workdir for pid, (_, workdir) in self.children.items()}
        dirs.update(self.lost_spares)
        if self.spare is not None:
            pid, hand, workdir = self.spare
            hand.close()
            dirs[pid] = workdir
        for pid, workdir in dirs.items():
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            remove_tree(workdir)
        self.children.clear()
        self.lost_spares.clear()
        self.spare = None


def serve_reuse(ctrl: socket.socket, opts: Header, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
    cache = FunctionCache(int(opts.get("function_cache_size", 256)))
    limits = Limits.from_options(opts)
    base = str(opts.get("workdir") or "/tmp")
    for stale in opts.get("cleanup", []):
        # Directories of lost predecessors (same user), but nothing outside the working area.
        if os.path.dirname(os.path.normpath(str(stale))) == os.path.normpath(base):
            remove_tree(str(stale))
    me = os.getpid()
    workdir = make_private_dir(base, "faas-reuse-")
    try:
        enter_private_dir(workdir)
        set_not_dumpable()
        apply_limits(limits)
        if limits.process_limit > 0:
            guard_process_creation()
        ready = {"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0], "dill": dill_version()}
        send_json(ctrl, {**ready, "workdir": workdir})
        stream = ctrl.makefile("rb")
        while True:
            task = read_task(stream)
            if task is None:
                return
            header, fn_payload, args_payload = task
            function_id = str(header.get("function_id", ""))
            result = run_task(fn_payload, args_payload, function_id, dumps, loads, limits, cache)
            flush_std_streams()
            if os.getpid() != me:
                os._exit(0)  # a process the user's code forked and let return: never serve
            write_result(ctrl, result)
    finally:
        if os.getpid() == me:
            os.chdir("/")
            remove_tree(workdir)


def main(ctrl: socket.socket) -> int:
    """Entry point (called by the loader with the control socket, after the script frame)."""
    clean_main_namespace()
    try:
        opts: Header = json.loads(recv_frame(ctrl))
    except (OSError, FrameError, ValueError) as e:
        sys.stderr.write(f"faas executor: no options received: {e}\n")
        return EXIT_PROTOCOL
    mode = str(opts.get("mode", ""))
    if mode not in ("zygote", "reuse"):
        send_json(ctrl, {"op": "fatal", "error": f"unknown mode {mode!r}"})
        return 64
    set_title(f"{TITLE}: {mode}")
    prefer_oom_kill()
    sys.path[0:0] = [str(p) for p in opts.get("pythonpath", [])]
    try:
        dumps, loads = import_runtime([str(m) for m in opts.get("preload", [])])
        workdir = str(opts.get("workdir") or "/tmp")
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise PermissionError(f"the working area {workdir} is not writable by uid {os.getuid()}")
    except BaseException as e:  # noqa: BLE001 - report why start-up failed, then exit
        send_json(ctrl, {"op": "fatal", "error": one_line(describe_exception(e))})
        return 1
    if mode == "zygote":
        set_not_dumpable()  # inherited by every forked task
        Zygote(ctrl, opts, dumps, loads).serve()
    else:
        serve_reuse(ctrl, opts, dumps, loads)
    return 0
