"""The container booted by tests/systemd/container.sh, seen from the test process: commands run
inside it (all namespaces of its PID 1, via nsenter), its files (through /proc/PID/root), its units
and its journal; and `wait_until`, the suite's only way to wait (bounded polling for a state).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], Optional[T]], timeout: float, what: str, every: float = 0.1) -> T:
    """Polls `probe` until it returns something truthy (returned) or `timeout` passes (fails
    with `what` and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s still not {what} (last: {value!r})")
        time.sleep(every)


class Container:
    """The container's systemd: commands, files, units and journal."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.root = Path(f"/proc/{pid}/root")

    def run(self, *cmd: str, check: bool = True, timeout: float = 120,
            stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs `cmd` inside; output is text. `check` fails the case on a non-zero exit."""
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *cmd], input=stdin or "",
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return self.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write(self, path: str, text: str) -> None:
        p = self.path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, prop: str) -> str:
        return self.show(unit, prop).get(prop, "")

    def active(self, unit: str) -> bool:
        return self.show(unit, "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}

    def start(self, *units: str) -> None:
        """`systemctl start`: returns once every unit reported READY=1 (Type=notify)."""
        self.systemctl("start", *units, timeout=180)

    def stop(self, *units: str) -> None:
        self.systemctl("stop", *units, timeout=180)

    def cursor(self) -> str:
        """The journal's current end, so a case reads only what came after it."""
        self.run("journalctl", "--sync", check=False)  # flush what was logged so far
        out = self.run("journalctl", "-n", "0", "--show-cursor", "--no-pager").stdout
        return out.strip().rsplit("-- cursor: ", 1)[-1]

    def journal(self, *matches: str, after: Optional[str] = None) -> List[Dict[str, Any]]:
        """Journal entries as dicts (`journalctl -o json`) with every `FIELD=value` of `matches`
        (several values of one field are alternatives), after the cursor `after` (from `cursor()`).
        With a cursor the matches are applied here: `journalctl --after-cursor` combined with
        matches skips the first matching entry when the cursor's own entry does not match."""
        self.run("journalctl", "--sync", check=False)
        if after is None:
            args = ["--", *matches]
        else:
            args = ["--after-cursor", after]
        out = self.run("journalctl", "--no-pager", "-o", "json", "--all", *args).stdout
        found = [json.loads(line) for line in out.splitlines() if line.strip()]
        if after is None:
            return found
        wanted: Dict[str, List[str]] = {}
        for m in matches:
            field, _, value = m.partition("=")
            wanted.setdefault(field, []).append(value)
        return [e for e in found if all(e.get(f) in vs for f, vs in wanted.items())]

    def redis(self, *args: str) -> str:
        return self.run("redis-cli", "--no-raw", *args).stdout.strip()

    def task_field(self, task_id: str, field: str) -> str:
        return self.run("redis-cli", "--raw", "HGET", f"faas:task:{task_id}", field).stdout.strip()
