"""Liveness does not depend on message size: a large argument and a large result crossing a
slow link between worker and dispatcher (a throttling TCP relay in this process) do not get the
worker declared dead, nor the dispatcher by the worker (docs/protocol.md, "Liveness and large
messages")."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import List

import pytest

from faas_client import Client
from faas_stack import Stack, free_port

# Bytes per second per connection and direction: an 8 MB message takes about 8 s, ten times the
# test stacks' liveness threshold (200 ms × 4).
RATE = 1_000_000
CHUNK = 16 * 1024


class Relay:
    """Forwards TCP connections from ``port`` to ``upstream``, at most RATE bytes/s each way."""

    def __init__(self, upstream: int) -> None:
        self.port = free_port()
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.socks: List[socket.socket] = [self.server]
        self.moved = [0]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.server.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                dst.sendall(data)
                self.moved[0] += len(data)
                time.sleep(len(data) / RATE)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_large_messages_over_a_slow_link_do_not_cost_liveness(mode: str, tmp_path: Path) -> None:
    s = Stack(tmp_path, mode=mode, workers=0, processes=1).start()
    relay = Relay(s.zmq_port)
    try:
        s.start_worker(endpoint=f"tcp://127.0.0.1:{relay.port}")
        c = Client(s.url)
        assert c.run(lambda: "warm") == "warm"
        arg, result = 6_000_000, 8_000_000
        start = time.monotonic()
        # A 6 MB argument (dispatcher → worker; the gateway takes up to 10 MiB of JSON) and an
        # 8 MB result (worker → dispatcher): 6 + 8 s on the relay.
        fid = c.register(lambda b, n: n * b"r")
        status, out = c.wait(c.execute(fid, b"a" * arg, result), timeout=120)
        took = time.monotonic() - start
        assert status == "COMPLETED", out
        assert out == b"r" * result
        assert took > 12, f"the relay did not throttle ({took:.1f} s)"
        assert relay.moved[0] > arg + result
        dispatcher, worker = s.log("dispatcher"), s.log("worker0")
        assert "worker lost" not in dispatcher and "worker left" not in dispatcher, dispatcher
        assert "dispatcher unreachable" not in worker, worker
        assert c.run(lambda: "after") == "after"
    finally:
        relay.close()
        s.stop()
