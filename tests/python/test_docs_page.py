"""The interactive /docs page in a real headless browser (Debian's chromium, driven over the
DevTools protocol): it loads /openapi.json, lists every operation, and its "Try it" buttons send
real requests whose answers it shows. JavaScript errors fail the test.

Without chromium the test is skipped, unless FAAS_REQUIRE_BROWSER=1 (set by CI) makes that a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from faas_client import _serialize as ser
from faas_stack import Stack

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium() -> str:
    exe = os.environ.get("FAAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        if os.environ.get("FAAS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (FAAS_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


class Page:
    """One browser tab over the DevTools protocol (websocket-client)."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # type: ignore[import-untyped]

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.errors: List[str] = []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(msg["params"]["exceptionDetails"])[:2000])
            elif msg.get("method") == "Log.entryAdded":
                entry = msg["params"]["entry"]
                # Network entries are the HTTP errors the test provokes on purpose (and favicon).
                if entry["level"] == "error" and entry.get("source") != "network":
                    self.errors.append(entry["text"])
            if msg.get("id") == my:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]

    def eval(self, js: str) -> Any:
        r = self.call("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{js}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def until(self, js: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(js)
            if v:
                return v
            assert time.monotonic() < deadline, f"never true: {js}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("docs")), processes=1, executor='isolation = "reuse"').start()
    yield s
    s.stop()


@pytest.fixture()
def page(docs_stack: Stack) -> Iterator[Page]:
    exe = chromium()
    with tempfile.TemporaryDirectory() as profile:
        # Its own process group: chromium's helper processes write to the profile until they end
        # too, and the directory can only be removed after all of them (see the finally below).
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                assert proc.poll() is None, f"chromium exited with {proc.returncode}"
                assert time.monotonic() < deadline, "chromium did not start its DevTools endpoint"
                time.sleep(0.05)
            port = port_file.read_text().split()[0]
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            tab = next(t for t in targets if t["type"] == "page")
            p = Page(tab["webSocketDebuggerUrl"])
            p.call("Runtime.enable")
            p.call("Log.enable")
            p.call("Page.enable")
            yield p
            p.ws.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stop_group(proc.pid)


def stop_group(pgid: int) -> None:
    """Kills what is left of chromium's process group (helpers outliving the browser) and waits
    until it is gone, so that its profile directory can be removed."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def op(path: str) -> str:
    return f'document.querySelector(\'[data-op="{path}"]\')'


def try_it(page: Page, operation: str, params: Optional[Dict[str, str]] = None, body: Optional[str] = None) -> Dict[str, Any]:
    """Fills an operation's form, clicks "Try it" and returns the status and body shown."""
    sel = op(operation)
    page.eval(f"{sel}.open = true")
    for name, value in (params or {}).items():
        page.eval(f"{sel}.querySelector('input[name=\"{name}\"]').value = {json.dumps(value)}")
    if body is not None:
        page.eval(f"{sel}.querySelector('textarea.request-body').value = {json.dumps(body)}")
    page.eval(f"{sel}.querySelector('.response').textContent = ''")
    page.eval(f"{sel}.querySelector('button.try').click()")
    status = page.until(f"{sel}.querySelector('.response-status')?.textContent")
    shown = page.eval(f"{sel}.querySelector('.response-body')?.textContent")
    return {"status": status, "body": shown}


def test_docs_page_lists_every_operation_and_tries_requests(docs_stack: Stack, page: Page) -> None:
    doc = requests.get(f"{docs_stack.url}/openapi.json", timeout=10).json()
    operations = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    page.call("Page.navigate", url=f"{docs_stack.url}/docs")
    loaded = page.until("document.getElementById('status')?.dataset.loaded")
    assert int(loaded) == len(operations) == 13
    shown = set(page.eval("[...document.querySelectorAll('[data-op]')].map(e => e.dataset.op)"))
    assert shown == operations
    assert page.eval("document.getElementById('title').textContent").startswith("faas ")
    # The register form comes pre-filled from the schema; a real payload registers a function.
    example = json.loads(page.eval(f"{op('POST /register_function')}.querySelector('textarea').value"))
    assert set(example) == {"name", "payload"}
    payload = ser.encode_function(lambda x: x + 1)
    r = try_it(page, "POST /register_function", body=json.dumps({"name": "from-docs", "payload": payload}))
    assert r["status"] == "200", r
    fid = json.loads(r["body"])["function_id"]
    r = try_it(page, "GET /functions/{function_id}", params={"function_id": fid})
    assert r["status"] == "200" and json.loads(r["body"])["name"] == "from-docs"
    r = try_it(page, "POST /execute_function",
               body=json.dumps({"function_id": fid, "payload": ser.encode_call((41,), {})}))
    assert r["status"] == "200", r
    tid = json.loads(r["body"])["task_id"]
    r = try_it(page, "GET /result/{task_id}", params={"task_id": tid, "wait": "10"})
    assert r["status"] == "200" and json.loads(r["body"])["status"] == "COMPLETED", r
    # Errors are shown as such.
    r = try_it(page, "GET /status/{task_id}", params={"task_id": "not-a-uuid"})
    assert r["status"] == "422" and "uuid_parsing" in r["body"]
    r = try_it(page, "GET /metrics")
    assert r["status"] == "200" and "faas_tasks_created_total" in r["body"]
    assert page.errors == [], page.errors
