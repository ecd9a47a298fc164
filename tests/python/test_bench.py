"""The benchmark client keeps working: each experiment runs briefly against every deployment."""

from __future__ import annotations

import faas_bench
from faas_stack import Stack


def test_latency_experiment(stack: Stack) -> None:
    r = faas_bench.latency(stack, 5)
    assert r["n"] == 5 and 0 < r["median_ms"] <= r["p95_ms"]
    assert r["server_mean_ms"] >= 0


def test_throughput_experiment_accounts_cpu(stack: Stack) -> None:
    r = faas_bench.throughput(stack, 20, 2)
    assert r["tasks"] == 20 and r["tasks_per_s"] > 0
    assert {"gateway", "redis", "client"} <= set(r["cpu_seconds"])


def test_weak_scaling_experiment(stack: Stack) -> None:
    r = faas_bench.weak_scaling(stack.url, 2, 1, 0.05)
    assert r["tasks"] == 2 and 0 < r["efficiency"] <= 1.0


def test_sdk_experiments(stack: Stack) -> None:
    m = faas_bench.sdk_map(stack, 50)
    assert m["tasks"] == 50 and m["tasks_per_s"] > 0 and "client" in m["cpu_ms_per_task"]
    lat = faas_bench.sdk_latency(stack, 5)
    assert lat["n"] == 5 and 0 < lat["median_ms"] <= lat["p95_ms"]
