"""``FaasExecutor``: a :class:`concurrent.futures.Executor` that runs calls on a faas cluster.

>>> with FaasExecutor("http://127.0.0.1:8000") as ex:
...     list(ex.map(abs, range(-3, 3)))
[3, 2, 1, 0, 1, 2]

* ``submit`` sends one request; ``map`` sends the calls in batches (``POST /execute_batch``,
  ``batch_size`` per request).
* One background thread completes every future: it long-polls ``POST /wait`` for up to
  ``max_batch`` of the oldest unfinished tasks at a time and is woken by the gateway the moment
  one ends (no per-task polling). Tasks the previous answer called pending go back with its
  ``cursor``, so the gateway re-reads only those that ended since. When new tasks arrive while
  it waits on a full set of older ones, nothing changes; when the set had room, its request is
  interrupted and re-sent with the new tasks, so a quick task never waits behind slow ones.
* ``future.result()`` returns the value or raises the task's exception with its remote
  traceback; a task that outlives its ``task_timeout`` raises ``TaskTimeout`` (a
  ``TimeoutError``).
* ``future.cancel()`` cancels the task on the server, queued or running (it ends FAILED with
  ``TaskCancelled``; a running task's executor is killed), and returns False once it ended.
  Unlike a local executor, whose running calls cannot be stopped, a running remote call can:
  ``future.cancel(running=False)`` keeps the local executors' rule.
  ``shutdown(cancel_futures=True)`` cancels only tasks that have not started, as the standard
  library's executors do.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor, Future
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ._http import Connection, Interrupted
from .client import POLL, Client, _task_result, with_remote_traceback
from .errors import FaasError, TaskLost, Unavailable

log = logging.getLogger("faas_client")

#: Most task ids in one wait request (the gateway's default ``max_batch``).
WAIT_BATCH = 1000
#: Seconds a wait answer keeps collecting ended tasks after the first, when following at least
#: ``GATHER_FROM`` tasks (a bulk ``map``: fewer, fuller answers; a few tasks: no delay).
GATHER = 0.005
GATHER_FROM = 64


class FaasFuture(Future):  # type: ignore[type-arg]
    """A future for one task; ``task_id`` is its id on the server."""

    def __init__(self, executor: "FaasExecutor") -> None:
        super().__init__()
        self.task_id: Optional[str] = None
        self._executor = executor

    def cancel(self, running: bool = True) -> bool:
        """Cancels the task on the server (also when it runs, unless ``running`` is False);
        False once it ended."""
        if self.done():
            return super().cancel()
        tid = self.task_id
        if tid is None:
            return super().cancel()
        # Taken out of the waiter's hands first, so the cancelled task's own end (FAILED with
        # TaskCancelled) does not complete this future meanwhile.
        if not self._executor._forget(tid):
            return False  # the waiter is completing it
        try:
            cancelled = self._executor.client.cancel(tid, running=running)
        except FaasError as e:
            log.warning("faas: cancelling task %s failed: %s", tid, e)
            cancelled = False
        if not cancelled:
            self._executor._track([self])
            return False
        return super().cancel()


class FaasExecutor(Executor):
    """Runs calls on a faas cluster.

    ``url``/``token``: the gateway (or pass a ready ``client``). ``task_timeout``: a time limit
    (seconds) for every task's run. ``batch_size``: calls per request in :meth:`map`.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: Optional[str] = None,
        *,
        task_timeout: Optional[float] = None,
        batch_size: int = 1000,
        client: Optional[Client] = None,
    ) -> None:
        self.client = client if client is not None else Client(url, token)
        self.task_timeout = task_timeout
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: "OrderedDict[str, FaasFuture]" = OrderedDict()
        self._shutdown = False
        # The waiter's request in flight: how many ids it covers (None: none in flight).
        self._in_flight: Optional[int] = None
        # The last wait answer's cursor and the ids it said were pending (waiter thread only).
        self._cursor: Optional[str] = None
        self._known: set = set()
        self._conn: Connection = self.client.http.connection()
        self._waiter = threading.Thread(target=self._wait_loop, name="faas-waiter", daemon=True)
        self._waiter.start()

    # ---- submitting ------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> FaasFuture:  # type: ignore[override]
        """Runs ``fn(*args, **kwargs)`` remotely; returns its future."""
        self._check_open()
        fut = FaasFuture(self)
        fut.task_id = self.client.submit(fn, args, kwargs, task_timeout=self.task_timeout)
        self._track([fut])
        return fut

    def submit_many(self, fn: Callable[..., Any], calls: Iterable[Tuple[Tuple[Any, ...], Dict[str, Any]]]) -> List[FaasFuture]:
        """Runs ``fn(*args, **kwargs)`` for each ``(args, kwargs)``, ``batch_size`` calls per
        request; returns the futures in order."""
        self._check_open()
        fid = self.client.register(fn)
        futures: List[FaasFuture] = []
        it = iter(calls)
        while True:
            chunk = list(itertools.islice(it, self.batch_size))
            if not chunk:
                return futures
            ids = self.client.submit_batch(fid, chunk, task_timeout=self.task_timeout)
            batch = []
            for tid in ids:
                fut = FaasFuture(self)
                fut.task_id = tid
                batch.append(fut)
            self._track(batch)
            futures += batch

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order; the calls are sent in
        batches of ``batch_size`` (``chunksize`` is accepted for compatibility and ignored)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        futures = self.submit_many(fn, ((args, {}) for args in zip(*iterables)))

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    fut = futures.pop()
                    left = None if deadline is None else deadline - time.monotonic()
                    yield fut.result(left)
            finally:
                for f in futures:
                    f.cancel(running=False)

        return results()

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _track(self, futures: List[FaasFuture]) -> None:
        interrupt = False
        with self._wake:
            for f in futures:
                assert f.task_id is not None
                self._pending[f.task_id] = f
            # A request in flight that had room for more ids would not see these: restart it.
            interrupt = self._in_flight is not None and self._in_flight < WAIT_BATCH
            self._wake.notify()
        if interrupt:
            self._conn.interrupt()

    def _forget(self, task_id: str) -> bool:
        """Stops waiting for a task; False if it was not being waited for."""
        with self._wake:
            return self._pending.pop(task_id, None) is not None

    # ---- the waiter ------------------------------------------------------------------------

    def _wait_loop(self) -> None:
        backoff = 0.05
        failing = False
        while True:
            with self._wake:
                while not self._pending and not self._shutdown:
                    self._wake.wait()
                if not self._pending:
                    return
                ids = list(itertools.islice(self._pending, WAIT_BATCH))
            try:
                # Connected before the request is counted in flight, so interrupt() reaches it.
                self._conn.connect()
                with self._wake:
                    self._in_flight = len(ids)
                    fresh = len(self._pending) > len(ids) and len(ids) < WAIT_BATCH
                if fresh:
                    continue  # more arrived meanwhile: include them
                body = {
                    "task_ids": [t for t in ids if t not in self._known],
                    "pending": [t for t in ids if t in self._known],
                    "cursor": self._cursor,
                    "timeout": POLL,
                    "return_when": "FIRST_COMPLETED",
                    # Following many tasks: a few ms more per answer collect many more results.
                    "gather": GATHER if len(ids) >= GATHER_FROM else 0.0,
                }
                got = self._conn.request("POST", "/wait", body, timeout=POLL + self.client.http.timeout)
                self._cursor = got.get("cursor")
                self._known = set(got.get("pending", ()))
            except Interrupted:
                continue
            except Unavailable as e:
                time.sleep(min(e.retry_after or backoff, 1.0))
                continue
            except Exception as e:  # noqa: BLE001 - keep the futures alive across outages
                if not failing:
                    log.warning("faas: waiting for tasks failed (%s); retrying", e)
                    failing = True
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            finally:
                with self._wake:
                    self._in_flight = None
            backoff, failing = 0.05, False
            self._settle(got)

    def _settle(self, got: Dict[str, Any]) -> None:
        finished: List[Tuple[FaasFuture, Any, bool]] = []
        with self._wake:
            for d in got.get("done", ()):
                fut = self._pending.pop(str(d["task_id"]), None)
                if fut is not None:
                    finished.append((fut, d, True))
            for tid in got.get("unknown", ()):
                fut = self._pending.pop(str(tid), None)
                if fut is not None:
                    finished.append((fut, tid, False))
            if not self._pending:
                self._wake.notify_all()
        for fut, d, known in finished:
            if not fut.set_running_or_notify_cancel():
                continue
            if not known:
                fut.set_exception(TaskLost(f"task {d} is unknown to the gateway (expired, or never existed)"))
                continue
            r = _task_result(d)
            if r.decode_error is not None:
                fut.set_exception(r.decode_error)
            elif r.status == "FAILED":
                fut.set_exception(with_remote_traceback(r.value))
            else:
                fut.set_result(r.value)

    # ---- stopping --------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work. ``cancel_futures`` cancels the queued tasks on the server;
        ``wait`` waits until every remaining future is done."""
        with self._wake:
            self._shutdown = True
            pending = list(self._pending.values())
            self._wake.notify_all()
        if cancel_futures:
            for f in pending:
                f.cancel(running=False)
        if wait:
            self._waiter.join()
        self._conn.close()
