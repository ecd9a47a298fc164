"""Small typed client for the faas HTTP API.

Payloads are dill pickles encoded with ``codecs`` base64, exactly as the specification's helper
code does, so anything this client sends is what a course-style client sends.
"""

from __future__ import annotations

import codecs
import time
from typing import Any, Callable, Optional, Tuple

import dill  # type: ignore[import-untyped]
import requests

STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED")
TERMINAL = ("COMPLETED", "FAILED")


def serialize(obj: Any) -> str:
    """dill-pickle ``obj`` and encode it as codecs base64 text.

    ``recurse=True`` makes a function carry the globals it uses (other functions, classes,
    constants of the caller's script); with dill's default a function defined in ``__main__``
    looks its globals up in the executor's own, empty ``__main__``.
    """
    return codecs.encode(dill.dumps(obj, recurse=True), "base64").decode()


def deserialize(text: str) -> Any:
    """Inverse of :func:`serialize`."""
    return dill.loads(codecs.decode(text.encode(), "base64"))


class FaasError(RuntimeError):
    """The API answered with an unexpected HTTP status."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class TaskTimeout(TimeoutError):
    """A task did not reach a terminal state within the client's wait timeout."""


class Client:
    """Talks to one faas gateway."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _json(self, resp: requests.Response) -> Any:
        if resp.status_code != 200:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text
            raise FaasError(resp.status_code, detail)
        return resp.json()

    def register(self, fn: Callable[..., Any], name: Optional[str] = None) -> str:
        """Registers ``fn``; returns its function id."""
        body = {"name": name or getattr(fn, "__name__", "function"), "payload": serialize(fn)}
        url = f"{self.base_url}/register_function"
        return str(self._json(self.session.post(url, json=body, timeout=self.timeout))["function_id"])

    def execute(self, function_id: str, *args: Any, **kwargs: Any) -> str:
        """Queues ``function(*args, **kwargs)``; returns the task id."""
        body = {"function_id": function_id, "payload": serialize((args, kwargs))}
        url = f"{self.base_url}/execute_function"
        return str(self._json(self.session.post(url, json=body, timeout=self.timeout))["task_id"])

    def status(self, task_id: str) -> str:
        url = f"{self.base_url}/status/{task_id}"
        return str(self._json(self.session.get(url, timeout=self.timeout))["status"])

    def result(self, task_id: str) -> Tuple[str, Any]:
        """(status, value): the return value or exception once terminal, else None."""
        url = f"{self.base_url}/result/{task_id}"
        body = self._json(self.session.get(url, timeout=self.timeout))
        raw = body.get("result")
        return str(body["status"]), (deserialize(raw) if raw is not None else None)

    def wait(self, task_id: str, timeout: float = 30.0, poll: float = 0.005) -> Tuple[str, Any]:
        """Polls until the task is COMPLETED or FAILED; raises :class:`TaskTimeout` after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            status, value = self.result(task_id)
            if status in TERMINAL:
                return status, value
            if time.monotonic() > deadline:
                raise TaskTimeout(f"task {task_id} still {status} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Registers and runs ``fn`` once; returns its value or raises its exception."""
        status, value = self.wait(self.execute(self.register(fn), *args, **kwargs))
        if status == "FAILED":
            raise value
        return value
