"""The ``faas`` command: look at functions and tasks, and map a function over an input file.

    faas [--url URL] [--token TOKEN] functions | function ID | delete ID
    faas status TASK_ID...
    faas result TASK_ID [--wait SECONDS]
    faas cancel [--queued-only] TASK_ID...
    faas info
    faas map MODULE:FUNC INPUT [--output FILE] [--star] [--task-timeout S] [--by-value]

``map`` reads one JSON value per line of INPUT (``-`` for stdin), calls FUNC on each (the value
is the argument; with ``--star`` a list is ``*args`` and an object ``**kwargs``), shows a
progress bar on stderr and writes one JSON line per input, in order, to ``--output`` (default
stdout): ``{"index": i, "value": ...}`` or ``{"index": i, "error": "Type: message"}``. It exits
1 when any call failed. FUNC is pickled by reference (its module must be importable by the
executors) unless ``--by-value`` sends its module's code along.

The gateway URL comes from ``--url``, else ``$FAAS_URL``, else http://127.0.0.1:8000; the token
from ``--token`` or ``$FAAS_TOKEN``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import types
from typing import IO, Any, Callable, List, Optional, Sequence

from .client import Client, remote_traceback
from .errors import FaasError
from .executor import FaasExecutor


class Progress:
    """A one-line progress bar on a terminal stream (redrawn at most 10 times a second)."""

    def __init__(self, total: int, stream: IO[str], width: int = 30) -> None:
        self.total = max(total, 0)
        self.stream = stream
        self.width = width
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{bar}] {self.done}/{self.total} {rate:,.0f}/s eta {eta:.0f}s{failed}"

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.done == self.total:
            self._drawn = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\r" + self.line() + "\n")
        self.stream.flush()


def load_function(spec: str, by_value: bool) -> Callable[..., Any]:
    """``MODULE:FUNC`` (module name or a .py path) → the function. With ``by_value`` the
    module's functions and classes are marked as ``__main__``'s, so dill sends their code."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"faas map: expected MODULE:FUNC, got {spec!r}")
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        name = os.path.splitext(os.path.basename(path))[0]
        s = importlib.util.spec_from_file_location(name, path)
        if s is None or s.loader is None:
            raise SystemExit(f"faas map: cannot load {path}")
        module = importlib.util.module_from_spec(s)
        sys.modules[name] = module
        s.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    if not callable(fn):
        raise SystemExit(f"faas map: {spec} is not callable")
    if by_value:
        for obj in list(vars(module).values()):
            if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == module.__name__:
                obj.__module__ = "__main__"
    return fn  # type: ignore[return-value]


def read_inputs(stream: IO[str]) -> List[Any]:
    out = []
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise SystemExit(f"faas map: line {n} is not JSON: {e}") from None
    return out


def call_of(value: Any, star: bool) -> tuple:
    if star and isinstance(value, list):
        return tuple(value), {}
    if star and isinstance(value, dict):
        return (), value
    return (value,), {}


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"repr": repr(value)}


def cmd_map(args: argparse.Namespace, client: Client) -> int:
    fn = load_function(args.function, args.by_value)
    if args.input == "-":
        inputs = read_inputs(sys.stdin)
    else:
        with open(args.input, encoding="utf-8") as f:
            inputs = read_inputs(f)
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    progress = Progress(len(inputs), sys.stderr)
    failed = 0
    ex = FaasExecutor(client=client, task_timeout=args.task_timeout, batch_size=args.batch)
    try:
        futures = ex.submit_many(fn, (call_of(v, args.star) for v in inputs))
        for i, fut in enumerate(futures):
            try:
                line = {"index": i, "value": jsonable(fut.result())}
                progress.update(True)
            except Exception as e:  # noqa: BLE001 - the task's own exception
                failed += 1
                line = {"index": i, "error": describe(e)}
                progress.update(False)
            out.write(json.dumps(line) + "\n")
        progress.finish()
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        if out is not sys.stdout:
            out.close()
    return 1 if failed else 0


def cmd_result(args: argparse.Namespace, client: Client) -> int:
    r = client.task(args.task_id, wait=args.wait)
    print(f"{r.task_id} {r.status}" + (f" (python {r.runtime['python']}, dill {r.runtime['dill']})" if r.runtime else ""))
    if r.decode_error is not None:
        print(r.decode_error)
        return 1
    if r.status == "FAILED":
        exc = r.value
        print(describe(exc) if isinstance(exc, BaseException) else repr(exc))
        tb = remote_traceback(exc) if isinstance(exc, BaseException) else None
        if tb:
            print(tb)
        return 1
    if r.status == "COMPLETED":
        print(repr(r.value))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faas", description="faas command-line client")
    p.add_argument("--url", default=os.environ.get("FAAS_URL", "http://127.0.0.1:8000"), help="gateway URL")
    p.add_argument("--token", default=os.environ.get("FAAS_TOKEN"), help="API token (Authorization: Bearer)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("functions", help="list registered functions")
    s = sub.add_parser("function", help="describe one function")
    s.add_argument("function_id")
    s = sub.add_parser("delete", help="delete a function (its queued tasks fail)")
    s.add_argument("function_id")
    s = sub.add_parser("status", help="status of tasks")
    s.add_argument("task_ids", nargs="+")
    s = sub.add_parser("result", help="result of a task (exit 1 if it FAILED)")
    s.add_argument("task_id")
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the task to end")
    s = sub.add_parser("cancel", help="cancel tasks (queued, or running: their executors are killed)")
    s.add_argument("task_ids", nargs="+")
    s.add_argument("--queued-only", action="store_true", help="leave running tasks running")
    sub.add_parser("info", help="versions, limits, dispatchers and workers")
    s = sub.add_parser("map", help="call MODULE:FUNC on every line of an input file")
    s.add_argument("function", metavar="MODULE:FUNC")
    s.add_argument("input", metavar="INPUT", help="JSON lines, one call each ('-' for stdin)")
    s.add_argument("--output", "-o", help="where to write the JSON-lines results (default stdout)")
    s.add_argument("--star", action="store_true", help="unpack lists as *args and objects as **kwargs")
    s.add_argument("--task-timeout", type=float, help="time limit of each task in seconds")
    s.add_argument("--batch", type=int, default=1000, help="calls per request (default 1000)")
    s.add_argument("--by-value", action="store_true", help="send the module's code instead of importing it on executors")
    return p


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.url, args.token, check_versions=args.command == "map")
    if args.command == "functions":
        for f in client.functions():
            print(f"{f.function_id}  {f.name}  {f.size_bytes} bytes  created {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(f.created_ms / 1000))}")
        return 0
    if args.command == "function":
        print(json.dumps(vars(client.function(args.function_id)), indent=2))
        return 0
    if args.command == "delete":
        print(f"deleted; {client.delete(args.function_id)} queued tasks failed")
        return 0
    if args.command == "status":
        for tid in args.task_ids:
            print(f"{tid} {client.status(tid)}")
        return 0
    if args.command == "result":
        return cmd_result(args, client)
    if args.command == "cancel":
        code = 0
        for tid in args.task_ids:
            ok = client.cancel(tid, running=not args.queued_only)
            why = "running" if args.queued_only else "already finished"
            print(f"{tid} {'cancelled' if ok else f'not cancelled ({why})'}")
            code |= 0 if ok else 1
        return code
    if args.command == "info":
        print(json.dumps(client.info(), indent=2))
        return 0
    return cmd_map(args, client)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return run(argv)
    except FaasError as e:
        print(f"faas: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
