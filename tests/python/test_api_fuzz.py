"""Fuzzes the HTTP API from its own OpenAPI document (schemathesis): every documented operation
gets schema-valid and schema-invalid requests; no answer may be a 5xx, every answer must match
the document (status codes, content types, response schemas, headers), invalid input must be
rejected with a 4xx, and the gateway must still be serving afterwards.

Excluded check: ``positive_data_acceptance`` (schema-valid data must be accepted) — a payload's
validity (base64 of a *valid pickle*) cannot be expressed in JSON Schema, so schema-valid
payloads are rightly rejected with 400.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from faas_stack import Stack


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("fuzz")), processes=1, executor='isolation = "reuse"').start()
    yield s
    s.stop()


def test_api_survives_fuzzing_from_its_openapi_document(fuzz_stack: Stack, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("schemathesis")
    started = time.monotonic()
    try:
        # No answer should take long (nothing the fuzzer makes can run): a request that does
        # times out after 10 s, is reported, and is shrunk, several times over. One worker:
        # with two threads, hypothesis's ast.parse of its filter lambdas sometimes fails inside
        # CPython 3.11 ("AST constructor recursion depth mismatch"), an error of the tool.
        r = subprocess.run(
            [str(exe), "run", f"{fuzz_stack.url}/openapi.json",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--phases", "examples,coverage,fuzzing", "--max-examples", "60",
             "--workers", "1", "--seed", "11", "--request-timeout", "10", "--no-color"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,  # its cache goes there
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout)
        pytest.fail(f"schemathesis did not finish in 300 s (a request the gateway does not "
                    f"answer?):\n{out[-4000:]}")
    took = time.monotonic() - started
    counts = re.findall(r"(\d+) generated, (\d+) passed", r.stdout)
    print(f"schemathesis: {counts} (generated, passed) in {took:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert counts and int(counts[-1][0]) > 300, "too few test cases generated"
    # Still serving, and no daemon died.
    assert requests.get(f"{fuzz_stack.url}/healthz", timeout=5).status_code == 200
    assert [n for n, _ in fuzz_stack.named_procs()] == ["redis", "gateway", "dispatcher"]
