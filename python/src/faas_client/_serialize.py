"""Payload encoding: dill pickles as base64 text.

:func:`serialize` and :func:`deserialize` are exactly the specification's helpers (``codecs``
base64 of a dill pickle). The SDK's own requests use the faster :func:`encode_call`, which
pickles plain data (numbers, strings, bytes and containers of them) with the standard
library's C pickler and everything else with dill, and sends base64 without line breaks; the
gateway accepts both, and executors load either with ``dill.loads``.
"""

from __future__ import annotations

import base64
import codecs
import pickle
import sys
from typing import Any, Callable, Mapping, Sequence

import dill  # type: ignore[import-untyped]

#: Pickle protocol of the fast path (what dill uses by default too).
PROTOCOL = 4
_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_MAX_PLAIN_ITEMS = 10_000


def serialize(obj: Any) -> str:
    """dill-pickle ``obj`` and encode it as codecs base64 text (the specification's helper).

    ``recurse=True`` makes a function carry the globals it uses (other functions, classes,
    constants of the caller's script); with dill's default a function defined in ``__main__``
    looks its globals up in the executor's own, empty ``__main__``.
    """
    return codecs.encode(dill.dumps(obj, recurse=True), "base64").decode()


def deserialize(text: str) -> Any:
    """Inverse of :func:`serialize` (accepts base64 with or without line breaks)."""
    return dill.loads(base64.b64decode(text))


def _plain(obj: Any, budget: list[int], depth: int = 0) -> bool:
    """True when ``obj`` is built from builtin scalars and containers only (pickled by value
    identically by pickle and dill)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > 20:
        return False
    t = type(obj)
    if t in _SCALARS:
        return True
    if t in (tuple, list, set, frozenset):
        return all(_plain(x, budget, depth + 1) for x in obj)
    if t is dict:
        return all(_plain(k, budget, depth + 1) and _plain(v, budget, depth + 1) for k, v in obj.items())
    return False


def dumps(obj: Any) -> bytes:
    """Pickles ``obj``: the C pickler for plain data, dill (``recurse=True``) otherwise."""
    if _plain(obj, [_MAX_PLAIN_ITEMS]):
        return pickle.dumps(obj, PROTOCOL)
    data: bytes = dill.dumps(obj, recurse=True)
    return data


def encode(data: bytes) -> str:
    """base64 without line breaks."""
    return base64.b64encode(data).decode("ascii")


def encode_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The ``payload`` of a task: base64 of a pickle of ``(args, kwargs)``."""
    return encode(dumps((tuple(args), dict(kwargs))))


def encode_function(fn: Callable[..., Any]) -> str:
    """The ``payload`` of a function registration."""
    return encode(dill.dumps(fn, recurse=True))


def decode(text: str) -> Any:
    """Loads a result payload (a value or an exception)."""
    return dill.loads(base64.b64decode(text))


def local_runtime() -> dict[str, str]:
    """This process's Python and dill versions, in the form of the gateway's ``runtime``."""
    return {"python": "%d.%d.%d" % sys.version_info[:3], "dill": str(getattr(dill, "__version__", ""))}
