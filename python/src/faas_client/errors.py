"""Exceptions raised by the SDK itself, and the warning about mismatched versions.

A task's own failure is never wrapped: :meth:`Client.get` and ``future.result()`` raise the
exception the function raised (or the platform's, e.g. ``TaskTimeout``, a ``TimeoutError``,
``TaskCancelled`` or ``WorkerFailure``), carrying the remote traceback.
"""

from __future__ import annotations

from typing import Any, Optional


class FaasError(Exception):
    """Base class of everything the SDK raises on its own."""


class ApiError(FaasError):
    """The gateway answered with an error status; ``detail`` is its explanation."""

    status_code: int = 0

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class BadRequest(ApiError):
    """400: a payload is not base64 or not a pickle."""


class Unauthorized(ApiError):
    """401/403: the gateway wants a (different) token."""


class NotFound(ApiError):
    """404: unknown function or task id."""


class Conflict(ApiError):
    """409: the request does not fit the task's state (e.g. cancelling a finished task)."""


class PayloadTooLarge(ApiError):
    """413: the request body exceeds the gateway's ``max_body_bytes``."""


class ValidationError(ApiError):
    """422: the request does not match the API's schema (``detail`` lists the problems)."""


class Unavailable(ApiError):
    """503: Redis is unreachable, or the gateway is at a limit (``retry_after`` seconds)."""

    def __init__(self, status_code: int, detail: Any, retry_after: Optional[float] = None) -> None:
        super().__init__(status_code, detail)
        self.retry_after = retry_after


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
              413: PayloadTooLarge, 422: ValidationError}


def api_error(status_code: int, detail: Any, retry_after: Optional[float] = None) -> ApiError:
    """The typed exception for an error answer."""
    if status_code == 503:
        return Unavailable(status_code, detail, retry_after)
    return _BY_STATUS.get(status_code, ApiError)(status_code, detail)


class ConnectionFailed(FaasError):
    """The gateway could not be reached, or the connection broke."""


class WaitTimeout(FaasError, TimeoutError):
    """A task did not end within the time the client was told to wait (the task goes on)."""


class TaskLost(FaasError):
    """The gateway does not know the task (any more): its record expired or never existed."""


class ResultNotLoadable(FaasError):
    """A task's result (value or exception) cannot be unpickled in this process, e.g. its class
    is not importable here, or dill/Python versions differ."""


class RemoteTraceback(Exception):
    """The traceback text of a remote exception; set as its ``__cause__`` on Python < 3.11
    (newer versions show it as a note)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class VersionMismatchWarning(UserWarning):
    """The client's Python or dill version differs from the executors' (functions pickled here
    may not load there: pickles of code depend on the Python version, dill's format on dill's)."""
