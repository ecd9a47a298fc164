"""The benchmark client keeps working: each experiment runs briefly against every deployment."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_performance_doc_shows_the_committed_run() -> None:
    """docs/performance.md's tables are what bench/doc_tables.py prints from the committed
    run's docs/bench/server.json (a new run without a rewritten document fails here)."""
    import doc_tables

    root = Path(__file__).resolve().parents[2]
    st = doc_tables.by_stage(json.loads((root / "docs" / "bench" / "server.json").read_text())["summary"])
    doc = (root / "docs" / "performance.md").read_text()
    for table in (doc_tables.targets(st), doc_tables.cpu(st), doc_tables.latency(st), doc_tables.weak(st)):
        assert table in doc, table
