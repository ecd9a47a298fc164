"""Unit tests of faas_client's encoding helpers (no server needed)."""

from __future__ import annotations

import codecs

import dill  # type: ignore[import-untyped]

from faas_client import deserialize, serialize


def test_serialize_matches_the_spec_helper() -> None:
    obj = ((1, "x", [2.5]), {"k": None})
    text = serialize(obj)
    assert text == codecs.encode(dill.dumps(obj), "base64").decode()  # data: recurse is moot
    assert text.endswith("\n")
    assert deserialize(text) == obj


def test_functions_roundtrip_by_value() -> None:
    fn = deserialize(serialize(lambda x: x * 3))
    assert fn(4) == 12
