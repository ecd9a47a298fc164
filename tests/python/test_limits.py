"""Size limits and worker tokens end to end, against real stacks: arguments over the dispatcher's
max_payload_bytes end FAILED with PayloadTooLarge, results over max_result_bytes with
ResultTooLarge (local mode: the dispatcher's executors; push/pull: the worker's limit), never
retried; stacks whose dispatcher and workers share a token_file run tasks, and a worker without
the token is refused and runs nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from faas_client import Client
from faas_stack import BIN_DIR, PYTHON, Stack

LIMIT = 20_000


@pytest.fixture(params=["local", "push"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(
        tmp_path, mode=request.param, processes=2,
        dispatcher=f"max_payload_bytes = {LIMIT}\nmax_result_bytes = {LIMIT}\nmax_retries = 2",
        worker=f"max_result_bytes = {LIMIT}",
    ).start()
    yield s
    s.stop()


def test_oversized_arguments_and_results_fail_once(limited: Stack) -> None:
    c = Client(limited.url)
    big_args = c.submit(len, ("x" * (2 * LIMIT),))
    big_result = c.submit(lambda n: "y" * n, (5 * LIMIT,))
    fine = c.submit(lambda n: "y" * n, (100,))
    status, exc = c.wait(big_args, timeout=60)
    assert status == "FAILED" and type(exc).__name__ == "PayloadTooLarge", exc
    assert "max_payload_bytes" in str(exc)
    status, exc = c.wait(big_result, timeout=60)
    assert status == "FAILED" and type(exc).__name__ == "ResultTooLarge", exc
    assert "max_result_bytes" in str(exc)
    assert c.wait(fine, timeout=60) == ("COMPLETED", "y" * 100)
    # Terminal at the first attempt although max_retries = 2.
    for tid in (big_args, big_result):
        assert limited.redis_cli("HGET", f"faas:task:{tid}", "attempts") == "1"


@pytest.fixture(params=["pull", "push"])
def with_token(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    token = tmp_path / "worker.token"
    token.write_text("an-example-worker-token-0123456789\n")
    token.chmod(0o600)
    s = Stack(tmp_path, mode=request.param, processes=2,
              dispatcher=f'token_file = "{token}"', worker=f'token_file = "{token}"').start()
    yield s
    s.stop()


def test_workers_with_the_token_run_tasks_and_others_are_refused(with_token: Stack) -> None:
    c = Client(with_token.url)
    assert c.run(lambda x: x + 1, 41) == 42
    # A worker without the token: refused at once, exits 1, and never runs anything.
    intruder = subprocess.run(
        [str(BIN_DIR / "faas-worker"), with_token.mode, "1", with_token.endpoint, "--id", "intruder"],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, FAAS_CONFIG_DIR=str(with_token.config_dir),
                 FAAS_WORKER_EXECUTOR__PYTHON=PYTHON, FAAS_WORKER_EXECUTOR__USER=""),
    )
    assert intruder.returncode == 1, intruder.stderr
    assert "token_file" in intruder.stderr
    assert "intruder" not in with_token.log("dispatcher"), "the intruder never registered"
    tids = [c.submit(lambda i: i * i, (i,)) for i in range(6)]
    assert [c.wait(t, timeout=60) for t in tids] == [("COMPLETED", i * i) for i in range(6)]


def test_a_20_mb_result_fails_once_and_costs_no_liveness(stack: Stack, client: Client) -> None:
    """The finding that opened this work: a result of tens of MB got its worker declared dead
    and (pull) was re-sent for ever. With the default limits (10 MiB) it ends FAILED with
    ResultTooLarge at its first attempt in every deployment shape, nobody is declared dead, and
    the next task runs."""
    lost_before = stack.log("dispatcher").count("worker lost")
    tid = client.submit(lambda: b"x" * (20 * 1024 * 1024))
    status, exc = client.wait(tid, timeout=120)
    assert status == "FAILED" and type(exc).__name__ == "ResultTooLarge", exc
    assert stack.redis_cli("HGET", f"faas:task:{tid}", "attempts") == "1"
    assert client.run(lambda: "next") == "next"
    assert stack.log("dispatcher").count("worker lost") == lost_before, "a worker was declared dead"
