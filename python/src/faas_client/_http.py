"""A small HTTP/1.1 JSON transport on the standard library (``http.client``).

One keep-alive connection per thread (:class:`Transport`), or a dedicated one
(:class:`Connection`) that another thread can :meth:`~Connection.interrupt` (the executor's
waiter uses that to restart a long-poll when new tasks arrive). No dependency beyond the
standard library, and a request costs a fraction of what ``requests`` costs.

A request that fails on a *reused* connection because the server had closed it (the usual
keep-alive race) is sent once more on a fresh connection; a failure on a fresh connection is
reported as :class:`~faas_client.errors.ConnectionFailed`.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from typing import Any, Dict, Optional

from .errors import ConnectionFailed, api_error

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest)


class Interrupted(Exception):
    """The request was interrupted on purpose by :meth:`Connection.interrupt`."""


class Connection:
    """One HTTP connection to the gateway."""

    def __init__(self, url: str, token: Optional[str], timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()
        self._interrupted = False

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        conn.auto_open = 0  # type: ignore[attr-defined]  # never reconnect behind our back
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise ConnectionFailed(f"cannot connect to {self._host}:{self._port}: {e}") from e
        return conn

    def connect(self) -> None:
        """Makes sure a connection is open (so that :meth:`interrupt` can reach it)."""
        with self._lock:
            if self._conn is None or self._conn.sock is None:
                self._conn = self._open(self.timeout)
            self._interrupted = False

    def interrupt(self) -> None:
        """Makes a request in progress on this connection fail with :class:`Interrupted`."""
        with self._lock:
            self._interrupted = True
            conn = self._conn
            if conn is not None and conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def request(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        """Sends a request; returns the decoded JSON (or text) of a 200 answer, raises the typed
        :class:`~faas_client.errors.ApiError` otherwise."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (0, 1):
            with self._lock:
                fresh = self._conn is None or self._conn.sock is None
                if fresh:
                    self._conn = self._open(timeout or self.timeout)
                conn = self._conn
                assert conn is not None
            if conn.sock is not None:
                conn.sock.settimeout(timeout or self.timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=self._headers)
                resp = conn.getresponse()
                raw = resp.read()
            except _STALE as e:
                self.close()
                if self._interrupted:
                    raise Interrupted() from e
                if fresh or attempt:
                    raise ConnectionFailed(f"{method} {path}: the gateway closed the connection: {e}") from e
                continue
            except socket.timeout as e:
                self.close()
                raise ConnectionFailed(f"{method} {path}: no answer within {timeout or self.timeout} s") from e
            except OSError as e:
                self.close()
                if self._interrupted:
                    raise Interrupted() from e
                raise ConnectionFailed(f"{method} {path}: {e}") from e
            if resp.will_close:
                self.close()
            return _decode(resp.status, resp.getheader("Content-Type") or "", raw, resp.getheader("Retry-After"))
        raise ConnectionFailed(f"{method} {path}: no answer")  # pragma: no cover


def _decode(status: int, ctype: str, raw: bytes, retry_after: Optional[str]) -> Any:
    if ctype.startswith("application/json"):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode(errors="replace")
    else:
        value = raw.decode(errors="replace")
    if status == 200:
        return value
    detail = value.get("detail", value) if isinstance(value, dict) else value
    try:
        wait = float(retry_after) if retry_after else None
    except ValueError:
        wait = None
    raise api_error(status, detail, wait)


class Transport:
    """Thread-local keep-alive connections to one gateway."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._local = threading.local()
        Connection(self.url, token, timeout)  # validates the URL now

    def connection(self) -> Connection:
        """A new dedicated connection (not shared with any thread)."""
        return Connection(self.url, self.token, self.timeout)

    def _conn(self) -> Connection:
        c: Optional[Connection] = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self.connection()
        return c

    def get(self, path: str, timeout: Optional[float] = None) -> Any:
        return self._conn().request("GET", path, None, timeout)

    def post(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        return self._conn().request("POST", path, body, timeout)

    def delete(self, path: str) -> Any:
        return self._conn().request("DELETE", path)
