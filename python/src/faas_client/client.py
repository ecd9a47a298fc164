"""The typed client of the faas HTTP API.

>>> c = Client("http://127.0.0.1:8000")
>>> c.run(lambda x: x * 2, 21)            # register (cached), run, wait, return or raise
42
>>> tid = c.submit(pow, (2, 10), task_timeout=5.0)
>>> c.get(tid)                            # the value, or the remote exception raised here
1024
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _serialize as ser
from ._http import Transport
from .errors import (
    Conflict,
    NotFound,
    RemoteTraceback,
    ResultNotLoadable,
    TaskLost,
    Unavailable,
    VersionMismatchWarning,
    WaitTimeout,
)

STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED")
TERMINAL = ("COMPLETED", "FAILED")
FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"

Function = Union[str, Callable[..., Any]]
"""A function id, or a callable (registered on first use, then cached)."""

#: Longest single long-poll the client asks for; longer waits are several polls.
POLL = 30.0


@dataclass
class TaskResult:
    """A finished (or still running) task as the gateway reports it."""

    task_id: str
    status: str
    #: The return value (COMPLETED), the exception (FAILED), or None while not finished.
    value: Any = None
    #: Python and dill versions of the executor that ran it, when known.
    runtime: Optional[Dict[str, str]] = None
    #: Why the result could not be unpickled here (then ``value`` is None).
    decode_error: Optional[ResultNotLoadable] = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def get(self) -> Any:
        """The value, or raises the task's exception (with its remote traceback)."""
        if self.decode_error is not None:
            raise self.decode_error
        if self.status == "FAILED":
            raise with_remote_traceback(self.value)
        if self.status != "COMPLETED":
            raise WaitTimeout(f"task {self.task_id} is still {self.status}")
        return self.value


@dataclass
class WaitResult:
    """What :meth:`Client.wait_many` found."""

    done: Dict[str, TaskResult] = field(default_factory=dict)
    pending: List[str] = field(default_factory=list)
    unknown: List[str] = field(default_factory=list)


@dataclass
class FunctionInfo:
    function_id: str
    name: str
    created_ms: int
    size_bytes: int


def remote_traceback(exc: BaseException) -> Optional[str]:
    """The remote traceback text an executor attached to ``exc``, if any."""
    for note in getattr(exc, "__notes__", None) or ():
        if isinstance(note, str) and note.startswith("Remote traceback:"):
            return note
    return None


def with_remote_traceback(exc: Any) -> BaseException:
    """``exc`` ready to be raised here: on Python < 3.11 (no notes shown) the remote traceback
    becomes its ``__cause__``. Non-exceptions (a broken result) become a ``TaskLost``."""
    if not isinstance(exc, BaseException):
        return TaskLost(f"the task failed with a result that is not an exception: {exc!r}")
    if sys.version_info < (3, 11) and exc.__cause__ is None:
        text = remote_traceback(exc)
        if text:
            exc.__cause__ = RemoteTraceback(text)
    return exc


def _task_result(body: Mapping[str, Any]) -> TaskResult:
    raw = body.get("result")
    r = TaskResult(task_id=str(body["task_id"]), status=str(body["status"]), runtime=body.get("runtime"))
    if raw is not None:
        try:
            r.value = ser.decode(raw)
        except Exception as e:  # noqa: BLE001 - unpickling runs arbitrary reducers
            r.decode_error = ResultNotLoadable(
                f"the {r.status} result of task {r.task_id} cannot be unpickled here: "
                f"{type(e).__name__}: {e} (executors: {r.runtime or 'unknown'})"
            )
            r.decode_error.__cause__ = e
    return r


def _major_minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


class Client:
    """Talks to one faas gateway. Thread-safe (one keep-alive connection per thread).

    ``token`` is sent as ``Authorization: Bearer``. ``check_versions`` compares this
    process's Python and dill with the executors' (``GET /info``) once, before the first
    function is registered, and warns with :class:`VersionMismatchWarning` on a difference.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        check_versions: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.base_url = self.url
        self.http = Transport(self.url, token, timeout)
        self._registered: "weakref.WeakKeyDictionary[Callable[..., Any], str]" = weakref.WeakKeyDictionary()
        self._registered_lock = threading.Lock()
        self._check_versions = check_versions
        self._versions_checked = False
        self._info: Optional[Dict[str, Any]] = None

    # ---- functions -------------------------------------------------------------------------

    def register(self, fn: Callable[..., Any], name: Optional[str] = None) -> str:
        """Registers ``fn`` and returns its function id. The id is cached per function object:
        registering the same function again costs nothing (pass a new ``name`` to force it)."""
        if name is None:
            with self._registered_lock:
                cached = self._registered.get(fn)
            if cached is not None:
                return cached
        self.check_versions()
        body = {"name": name or getattr(fn, "__name__", "function"), "payload": ser.encode_function(fn)}
        fid = str(self.http.post("/register_function", body)["function_id"])
        if name is None:
            try:
                with self._registered_lock:
                    self._registered[fn] = fid
            except TypeError:
                pass  # not weak-referenceable: registered every time
        return fid

    def function_id(self, function: Function) -> str:
        """The id of ``function`` (registering a callable if needed)."""
        return function if isinstance(function, str) else self.register(function)

    def forget(self, function: Callable[..., Any]) -> None:
        """Drops the cached id of ``function`` (the next use registers it again)."""
        with self._registered_lock:
            self._registered.pop(function, None)

    def functions(self, page: int = 500) -> List[FunctionInfo]:
        """Every registered function, oldest first."""
        out: List[FunctionInfo] = []
        offset = 0
        while True:
            body = self.http.get(f"/functions?offset={offset}&limit={page}")
            out += [FunctionInfo(**f) for f in body["functions"]]
            offset += len(body["functions"])
            if not body["functions"] or offset >= body["total"]:
                return out

    def function(self, function_id: str) -> FunctionInfo:
        """One function's description (``NotFound`` when unknown)."""
        return FunctionInfo(**self.http.get(f"/functions/{function_id}"))

    def delete(self, function: Function) -> int:
        """Deletes a function; its queued tasks fail with ``FunctionDeleted``. Returns how many
        did. A callable is looked up in the cache (``NotFound`` if it was never registered)."""
        if isinstance(function, str):
            fid = function
        else:
            with self._registered_lock:
                found = self._registered.pop(function, None)
            if found is None:
                raise NotFound(404, "this function was not registered by this client")
            fid = found
        return int(self.http.delete(f"/functions/{fid}")["failed_tasks"])

    # ---- tasks -----------------------------------------------------------------------------

    def execute(self, function: Function, *args: Any, **kwargs: Any) -> str:
        """Queues ``function(*args, **kwargs)``; returns the task id."""
        return self.submit(function, args, kwargs)

    def submit(
        self,
        function: Function,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        task_timeout: Optional[float] = None,
    ) -> str:
        """Queues one call; ``task_timeout`` (seconds) limits its run on the server (it then
        fails with ``TaskTimeout``, a ``TimeoutError``). Returns the task id."""
        body: Dict[str, Any] = {"function_id": "", "payload": ser.encode_call(args, kwargs or {})}
        if task_timeout is not None:
            body["timeout"] = task_timeout
        return str(self._post_for_function(function, "/execute_function", body)["task_id"])

    def submit_batch(
        self,
        function: Function,
        calls: Iterable[Tuple[Sequence[Any], Mapping[str, Any]]],
        *,
        task_timeout: Optional[float] = None,
    ) -> List[str]:
        """Queues many calls ``(args, kwargs)`` of one function in one request (at most the
        gateway's ``max_batch``); returns the task ids in order."""
        body: Dict[str, Any] = {"function_id": "", "payloads": [ser.encode_call(a, k) for a, k in calls]}
        if task_timeout is not None:
            body["timeout"] = task_timeout
        return [str(t) for t in self._post_for_function(function, "/execute_batch", body)["task_ids"]]

    def _post_for_function(self, function: Function, path: str, body: Dict[str, Any]) -> Any:
        """Posts ``body`` with the function's id; a cached id whose function was deleted on the
        server is registered again once."""
        body["function_id"] = self.function_id(function)
        try:
            return self.http.post(path, body)
        except NotFound:
            if isinstance(function, str):
                raise
            self.forget(function)
            body["function_id"] = self.register(function)
            return self.http.post(path, body)

    def status(self, task_id: str) -> str:
        return str(self.http.get(f"/status/{task_id}")["status"])

    def result(self, task_id: str) -> Tuple[str, Any]:
        """(status, value) right now: the return value or exception once the task ended, else None."""
        r = self.task(task_id)
        return r.status, r.value

    def task(self, task_id: str, wait: float = 0.0) -> TaskResult:
        """The task's state; with ``wait`` > 0, waits that long at most for it to end."""
        path = f"/result/{task_id}" if wait <= 0 else f"/result/{task_id}?wait={wait:.3f}"
        while True:
            try:
                return _task_result(self.http.get(path, timeout=self.http.timeout + max(wait, 0)))
            except Unavailable as e:
                if e.retry_after is None:
                    raise
                time.sleep(min(e.retry_after, 1.0))

    def wait(self, task_id: str, timeout: Optional[float] = 30.0) -> Tuple[str, Any]:
        """Waits (long-poll, no polling) until the task ends; returns (status, value) where value
        is the return value or the exception. Raises :class:`WaitTimeout` after ``timeout``
        seconds (None: no limit)."""
        r = self._wait_one(task_id, timeout)
        return r.status, r.value

    def get(self, task_id: str, timeout: Optional[float] = None) -> Any:
        """Waits until the task ends; returns its value or raises its exception (with the remote
        traceback). Raises :class:`WaitTimeout` after ``timeout`` seconds (None: no limit)."""
        return self._wait_one(task_id, timeout).get()

    def _wait_one(self, task_id: str, timeout: Optional[float]) -> TaskResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL if deadline is None else min(POLL, max(0.0, deadline - time.monotonic()))
            r = self.task(task_id, wait=left)
            if r.done:
                return r
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} still {r.status} after {timeout} s")

    def wait_many(
        self,
        task_ids: Sequence[str],
        timeout: Optional[float] = 0.0,
        return_when: str = FIRST_COMPLETED,
    ) -> WaitResult:
        """One ``POST /wait``: returns when one (``FIRST_COMPLETED``) or all
        (``ALL_COMPLETED``) of the tasks ended, or after ``timeout`` seconds (capped by the
        gateway's ``max_wait_secs``)."""
        t = POLL if timeout is None else timeout
        body = {"task_ids": list(task_ids), "timeout": t, "return_when": return_when}
        while True:
            try:
                got = self.http.post("/wait", body, timeout=self.http.timeout + t)
                break
            except Unavailable as e:
                if e.retry_after is None:
                    raise
                time.sleep(min(e.retry_after, 1.0))
        return WaitResult(
            done={str(d["task_id"]): _task_result(d) for d in got["done"]},
            pending=[str(x) for x in got["pending"]],
            unknown=[str(x) for x in got["unknown"]],
        )

    def as_completed(self, task_ids: Iterable[str], timeout: Optional[float] = None) -> Iterator[TaskResult]:
        """Yields the tasks' results as they end (batch long-polls, 1000 ids at a time)."""
        pending = list(dict.fromkeys(task_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            left = POLL if deadline is None else max(0.0, deadline - time.monotonic())
            got = self.wait_many(pending[:1000], min(left, POLL))
            for tid in got.unknown:
                raise TaskLost(f"task {tid} is unknown to the gateway (expired, or never existed)")
            yield from got.done.values()
            finished = set(got.done)
            pending = [t for t in pending if t not in finished]
            if pending and deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{len(pending)} tasks still running after {timeout} s")

    def cancel(self, task_id: str, running: bool = True) -> bool:
        """Cancels a task: it ends FAILED with ``TaskCancelled`` and, if it was RUNNING, its
        executor is killed wherever it runs. With ``running=False`` only a QUEUED task is
        cancelled. Returns False when the task already ended (or is RUNNING and ``running`` is
        False); ``NotFound`` when unknown."""
        try:
            query = "" if running else "?running=false"
            self.http.post(f"/cancel/{task_id}{query}", {})
            return True
        except Conflict:
            return False

    def run(self, fn: Function, *args: Any, **kwargs: Any) -> Any:
        """Runs ``fn(*args, **kwargs)`` remotely and returns its value or raises its exception."""
        return self.get(self.submit(fn, args, kwargs))

    # ---- the service -----------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """``GET /info``: versions, limits, dispatchers with their workers and runtimes."""
        info: Dict[str, Any] = self.http.get("/info")
        self._info = info
        return info

    def version_mismatches(self, info: Optional[Mapping[str, Any]] = None) -> List[str]:
        """How this process's Python (major.minor) and dill differ from the executors'."""
        info = info if info is not None else self.info()
        here = ser.local_runtime()
        out = []
        for rt in info.get("runtimes", []):
            py, dl = str(rt.get("python", "")), str(rt.get("dill", ""))
            if py and _major_minor(py) != _major_minor(here["python"]):
                out.append(f"executors run Python {py}, this client {here['python']}")
            if dl and dl != here["dill"]:
                out.append(f"executors run dill {dl}, this client {here['dill']}")
        return sorted(set(out))

    def check_versions(self) -> None:
        """Warns once (:class:`VersionMismatchWarning`) if the executors' Python or dill differ."""
        if self._versions_checked or not self._check_versions:
            return
        self._versions_checked = True
        try:
            problems = self.version_mismatches()
        except Exception:  # noqa: BLE001 - an older gateway without /info, or no dispatcher yet
            return
        if problems:
            warnings.warn(
                "faas: " + "; ".join(problems) + " (pickled functions may fail to load; match the versions)",
                VersionMismatchWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        """Nothing to release explicitly (connections close with their threads)."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
