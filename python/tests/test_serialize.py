"""Unit tests of faas_client's encoding helpers (no server needed)."""

from __future__ import annotations

import base64
import codecs
import pickle

import dill  # type: ignore[import-untyped]

from faas_client import deserialize, serialize
from faas_client import _serialize as ser


def test_serialize_matches_the_spec_helper() -> None:
    obj = ((1, "x", [2.5]), {"k": None})
    text = serialize(obj)
    assert text == codecs.encode(dill.dumps(obj), "base64").decode()  # data: recurse is moot
    assert text.endswith("\n")
    assert deserialize(text) == obj


def test_functions_roundtrip_by_value() -> None:
    fn = deserialize(serialize(lambda x: x * 3))
    assert fn(4) == 12


def test_plain_calls_take_the_fast_path_and_load_with_dill() -> None:
    args = ((1, -2.5, "ü", b"\x00", None, True, [1, {"a": (2, 3)}], {1, 2}, frozenset()), {"k": 10**30})
    text = ser.encode_call(*args)
    raw = base64.b64decode(text)
    assert raw == pickle.dumps(args, ser.PROTOCOL), "plain data: the C pickler"
    assert "\n" not in text
    assert dill.loads(raw) == args


def test_anything_else_goes_through_dill_by_value() -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    text = ser.encode_call((Point(3), lambda: 1), {})
    (p, f), kw = dill.loads(base64.b64decode(text))
    assert p.x == 3 and f() == 1 and kw == {}


def test_plain_detection_is_bounded() -> None:
    deep: list = []
    for _ in range(50):
        deep = [deep]
    assert not ser._plain(deep, [10_000])
    assert not ser._plain(list(range(20_000)), [10_000])
    assert ser._plain([1, 2, 3], [10_000])


def test_local_runtime_is_this_interpreter() -> None:
    import platform

    rt = ser.local_runtime()
    assert rt["python"] == platform.python_version() and rt["dill"] == dill.__version__
