"""Fixtures of the systemd suite: the container booted by scripts/systemd-test.sh.

This pytest process runs in the container's network namespace (the wrapper starts it with
`nsenter -n`), so the gateway is http://127.0.0.1:8000 for the client. A failed case gets the unit
states and the end of the journal attached to its report.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from machine import Container


@pytest.fixture(scope="session")
def container() -> Container:
    pid = os.environ.get("FAAS_SYSTEMD_PID")
    if not pid:
        pytest.skip("no container: run the systemd suite with scripts/systemd-test.sh")
    c = Container(int(pid))
    here = os.readlink("/proc/self/ns/net")
    assert here == os.readlink(f"/proc/{pid}/ns/net"), \
        "this pytest must run in the container's network namespace (scripts/systemd-test.sh does that)"
    return c


def _diagnostics(c: Container) -> str:
    parts = []
    for title, cmd in [
        ("faas units", ["systemctl", "--no-pager", "list-units", "--all", "faas*", "redis*"]),
        ("journal (last 120 lines)", ["journalctl", "--no-pager", "-n", "120", "-o", "short-precise"]),
    ]:
        p = c.run(*cmd, check=False, timeout=30)
        parts.append(f"--- {title} ---\n{p.stdout}{p.stderr}")
    return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    pid = os.environ.get("FAAS_SYSTEMD_PID")
    if report.failed and pid and call.when in ("setup", "call"):
        try:
            report.sections.append(("systemd diagnostics", _diagnostics(Container(int(pid)))))
        except Exception as e:  # the container itself may be gone; say so instead of hiding the failure
            report.sections.append(("systemd diagnostics", f"unavailable: {e!r}"))
