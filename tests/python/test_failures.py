"""Every way a task can fail: it ends FAILED with a loadable exception naming the cause, and the
platform keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from faas_client import Client
from faas_stack import Stack


@pytest.fixture(scope="module", params=["local", "pull", "push"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A stack with a 2 s task timeout and a 512 MiB memory limit per task."""
    s = Stack(Path(tmp_path_factory.mktemp("limited")), mode=request.param, processes=2,
              executor="task_timeout_secs = 2\nmemory_limit_mb = 512").start()
    yield Client(s.url)
    s.stop()


def failure(client: Client, fn: Callable[..., Any], *args: Any) -> BaseException:
    status, value = client.wait(client.execute(client.register(fn), *args))
    assert status == "FAILED", value
    assert isinstance(value, BaseException), value
    # The platform keeps serving after any failure.
    assert client.run(lambda: "still fine") == "still fine"
    return value


def platform(e: BaseException, name: str) -> str:
    assert type(e).__name__ == name, repr(e)
    assert str(e).startswith(f"{name}:"), str(e)
    return str(e)


def test_exception_carries_the_remote_traceback(client: Client) -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    e = failure(client, divide, 1, 0)
    assert isinstance(e, ZeroDivisionError)
    notes = "\n".join(getattr(e, "__notes__", []))
    assert "divide" in notes and "a / b" in notes, notes


def test_user_exception_class_defined_in_main(client: Client) -> None:
    class Oops(ValueError):
        pass

    def raiser() -> None:
        raise Oops("custom")

    e = failure(client, raiser)
    assert type(e).__name__ == "Oops" and isinstance(e, ValueError) and "custom" in str(e)


def test_exit_code(client: Client) -> None:
    text = platform(failure(client, lambda: __import__("os")._exit(3)), "ExecutorCrashed")
    assert "3" in text


def test_segfault(client: Client) -> None:
    text = platform(failure(client, lambda: __import__("ctypes").string_at(0)), "ExecutorCrashed")
    assert "SIGSEGV" in text


def test_sigkill(client: Client) -> None:
    def die() -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    assert "SIGKILL" in platform(failure(client, die), "ExecutorCrashed")


def test_unimportable_function(client: Client, tmp_path: Path) -> None:
    import importlib
    import sys

    (tmp_path / "only_on_client.py").write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("only_on_client")
        text = platform(failure(client, mod.f), "DeserializationError")
        assert "only_on_client" in text
    finally:
        sys.path.remove(str(tmp_path))


def test_arguments_that_are_not_args_kwargs(stack: Stack, client: Client) -> None:
    import requests

    from faas_client import serialize

    fid = client.register(lambda *a: a)
    r = requests.post(f"{stack.url}/execute_function",
                      json={"function_id": fid, "payload": serialize([1, 2, 3])})
    assert r.status_code == 200
    status, e = client.wait(r.json()["task_id"])
    assert status == "FAILED"
    platform(e, "InvalidTask")


def test_unpicklable_result(client: Client) -> None:
    platform(failure(client, lambda: (i for i in range(3))), "SerializationError")


def test_timeout(limited: Client) -> None:
    text = platform(failure(limited, lambda: __import__("time").sleep(30)), "TaskTimeout")
    assert "2" in text


def test_memory_limit(limited: Client) -> None:
    e = failure(limited, lambda: len(bytearray(2 * 1024**3)))
    assert type(e).__name__ in ("ResourceLimitExceeded", "MemoryError"), repr(e)
    assert "memory" in str(e).lower() or isinstance(e, MemoryError)


def test_nothing_is_left_running(client: Client) -> None:
    fid = client.register(lambda i: __import__("os")._exit(i % 3) if i % 2 else i)
    tasks = [client.execute(fid, i) for i in range(12)]
    statuses = [client.wait(t)[0] for t in tasks]
    assert statuses == ["FAILED" if i % 2 else "COMPLETED" for i in range(12)]
