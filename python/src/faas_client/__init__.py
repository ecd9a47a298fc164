"""faas-client: the Python SDK of faas.

* :class:`Client`: the HTTP API, typed (register, submit, get/wait with long-polls, cancel,
  functions, delete, info).
* :class:`FaasExecutor`: a :class:`concurrent.futures.Executor` running calls on the cluster.
* the ``faas`` command (:mod:`faas_client.cli`).

See docs/python.md in the faas repository.
"""

from ._serialize import deserialize, serialize
from .client import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    STATUSES,
    TERMINAL,
    Client,
    FunctionInfo,
    TaskResult,
    WaitResult,
    remote_traceback,
)
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    FaasError,
    NotFound,
    PayloadTooLarge,
    RemoteTraceback,
    ResultNotLoadable,
    TaskLost,
    Unauthorized,
    Unavailable,
    ValidationError,
    VersionMismatchWarning,
    WaitTimeout,
)
from .executor import FaasExecutor, FaasFuture

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "STATUSES",
    "TERMINAL",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "FaasError",
    "FaasExecutor",
    "FaasFuture",
    "FunctionInfo",
    "NotFound",
    "PayloadTooLarge",
    "RemoteTraceback",
    "ResultNotLoadable",
    "TaskLost",
    "TaskResult",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "VersionMismatchWarning",
    "WaitResult",
    "WaitTimeout",
    "deserialize",
    "remote_traceback",
    "serialize",
]
