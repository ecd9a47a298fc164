"""Unit tests of the SDK that need no server: errors, versions, results, the CLI's helpers."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import pytest

from faas_client import (
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RemoteTraceback,
    TaskResult,
    Unavailable,
    ValidationError,
    VersionMismatchWarning,
    WaitTimeout,
    remote_traceback,
)
from faas_client import _serialize as ser
from faas_client import cli
from faas_client._http import _decode
from faas_client.client import _task_result, with_remote_traceback


def test_error_answers_become_typed_exceptions() -> None:
    cases = [(400, BadRequest), (404, NotFound), (409, Conflict), (422, ValidationError), (503, Unavailable)]
    for status, cls in cases:
        with pytest.raises(cls) as info:
            _decode(status, "application/json", b'{"detail": "why"}', None)
        assert info.value.status_code == status and info.value.detail == "why"
    with pytest.raises(Unavailable) as busy:
        _decode(503, "application/json", b'{"detail": "full"}', "1")
    assert busy.value.retry_after == 1.0
    assert _decode(200, "text/plain", b"metrics", None) == "metrics"


def test_wait_timeout_is_a_timeout_error() -> None:
    assert issubclass(WaitTimeout, TimeoutError)


def test_version_mismatch_is_reported_per_difference() -> None:
    c = Client("http://127.0.0.1:9")  # never contacted
    here = ser.local_runtime()
    same = {"runtimes": [{"python": here["python"], "dill": here["dill"]}]}
    assert c.version_mismatches(same) == []
    patch_level = here["python"].rsplit(".", 1)[0] + ".99"
    assert c.version_mismatches({"runtimes": [{"python": patch_level, "dill": here["dill"]}]}) == []
    other = {"runtimes": [{"python": "2.7.18", "dill": "0.0.1"}, {"python": "", "dill": ""}]}
    problems = c.version_mismatches(other)
    assert len(problems) == 2 and "Python 2.7.18" in problems[0] + problems[1]


def test_check_versions_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Client("http://127.0.0.1:9")
    monkeypatch.setattr(c, "info", lambda: {"runtimes": [{"python": "2.7.18", "dill": "9.9"}]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c.check_versions()
        c.check_versions()
    assert [w.category for w in caught] == [VersionMismatchWarning]
    assert "2.7.18" in str(caught[0].message)


def test_failed_results_raise_the_remote_exception() -> None:
    exc = ZeroDivisionError("division by zero")
    exc.add_note("Remote traceback:\nTraceback (most recent call last):\n  File \"x.py\", line 1\n")
    r = _task_result({"task_id": "t", "status": "FAILED", "result": ser.encode(ser.dumps(exc))})
    with pytest.raises(ZeroDivisionError) as info:
        r.get()
    assert remote_traceback(info.value) is not None
    assert TaskResult("t", "COMPLETED", 5).get() == 5
    with pytest.raises(WaitTimeout):
        TaskResult("t", "RUNNING").get()


def test_remote_traceback_becomes_the_cause_before_python_3_11(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = ValueError("bad")
    exc.__notes__ = ["Remote traceback:\n  File \"f.py\", line 2"]
    monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    out = with_remote_traceback(exc)
    assert isinstance(out.__cause__, RemoteTraceback) and "f.py" in str(out.__cause__)


def test_unloadable_results_are_named() -> None:
    # A pickle of a global from a module this process does not have.
    raw = b"\x80\x04\x8c\x0eno_such_module\x94\x8c\x01X\x94\x93\x94."
    r = _task_result({"task_id": "t", "status": "COMPLETED", "result": ser.encode(raw)})
    assert r.decode_error is not None
    assert "No module named 'no_such_module'" in str(r.decode_error)
    with pytest.raises(Exception, match="cannot be unpickled here"):
        r.get()


def test_progress_bar_line() -> None:
    out = io.StringIO()
    p = cli.Progress(4, out, width=8)
    for ok in (True, False, True, True):
        p.update(ok)
    p.finish()
    last = out.getvalue().strip().split("\r")[-1]
    assert last.startswith("[########] 4/4") and "1 failed" in last


def test_map_inputs_and_calls() -> None:
    assert cli.read_inputs(io.StringIO('1\n\n[2, 3]\n{"a": 1}\n')) == [1, [2, 3], {"a": 1}]
    with pytest.raises(SystemExit):
        cli.read_inputs(io.StringIO("{nope\n"))
    assert cli.call_of([2, 3], star=True) == ((2, 3), {})
    assert cli.call_of({"a": 1}, star=True) == ((), {"a": 1})
    assert cli.call_of([2, 3], star=False) == (([2, 3],), {})


def test_load_function_by_path_and_by_value(tmp_path: Path) -> None:
    mod = tmp_path / "mymod_for_faas.py"
    mod.write_text("def helper(x):\n    return x + 1\n\ndef f(x):\n    return helper(x) * 2\n")
    fn = cli.load_function(f"{mod}:f", by_value=True)
    assert fn(1) == 4 and fn.__module__ == "__main__"
    import dill  # type: ignore[import-untyped]

    sys.modules.pop("mymod_for_faas", None)
    assert dill.loads(dill.dumps(fn, recurse=True))(2) == 6, "helper travels by value"
    with pytest.raises(SystemExit):
        cli.load_function("no_colon", by_value=False)
