"""faas-loadgen against real deployments: every mode runs briefly and reports sane numbers, so the
load generator and its harness (bench/faas_serverbench.py) cannot rot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import faas_serverbench as sb


def test_the_generator_is_built() -> None:
    assert sb.LOADGEN.exists(), f"{sb.LOADGEN}: scripts/test.sh builds the whole workspace"


def test_submit_read_and_closed_loop(tmp_path: Path) -> None:
    s = sb.ServerStack(tmp_path, "local", "reuse", backend=True).start()
    try:
        p = sb.phase(sb.loadgen(s, ["-c", "8", "submit", "--tasks", "300"], []), "submit")
        assert (p["ops"], p["errors"], p["latency_us"]["count"]) == (300, 0, 300)
        assert {"redis", "gateway", "dispatcher", "loadgen"} <= set(p["cpu"]["components"])
        assert p["cpu"]["components"]["gateway"]["total_s"] > 0, p["cpu"]

        # Open loop at a rate: about rate × duration tasks, each also timed from its actual send.
        p = sb.phase(sb.loadgen(s, ["-c", "4", "submit", "--rate", "200", "--duration", "1"], []),
                     "submit")
        assert 150 <= p["ops"] <= 200 and p["errors"] == 0, p
        assert p["service_us"]["count"] == p["ops"]

        p = sb.phase(sb.loadgen(s, ["-c", "8", "read", "--tasks", "20", "--requests", "400"], []), "read")
        assert (p["ops"], p["errors"]) == (400, 0)

        r = sb.loadgen(s, ["-c", "4", "closed", "--duration", "1", "--warmup", "0.3"], [])
        assert r["collect"]["method"] in ("poll", "long-poll")
        p = sb.phase(r, "closed")
        assert p["ops"] > 0 and p["errors"] == 0, p
        # Executors are the dispatcher's children: the tasks ran there.
        assert p["cpu"]["components"]["dispatcher"]["children_s"] > 0, p["cpu"]
        assert p["latency_us"]["p50_us"] <= p["latency_us"]["p99_us"]
    finally:
        s.stop()


@pytest.mark.parametrize("mode", ["local", "push"])
def test_drain_is_timed_from_the_dispatcher_start(tmp_path: Path, mode: str) -> None:
    s = sb.ServerStack(tmp_path, mode, "reuse", backend=False).start()
    try:
        r = sb.loadgen(s, ["-c", "8", "drain", "--tasks", "200", "--redis", s.redis_url], [],
                       stdin_go=s)
    finally:
        s.stop()
    assert sb.phase(r, "submit")["ops"] == 200
    p = sb.phase(r, "drain")
    d = p["drain"]
    assert d["tasks"] == d["completed"] == 200 and p["errors"] == 0, d
    # No dispatcher ran before the go line: no task can have started earlier.
    assert 0 <= d["first_started_after_go_ms"] <= d["last_finished_after_go_ms"], d
    assert d["per_s_from_go"] > 0 and d["detected_s"] * 1000 >= d["last_finished_after_go_ms"] - 5
    comps = p["cpu"]["components"]
    # The dispatcher (and worker) started inside the window and were found by their patterns.
    assert comps["dispatcher"]["total_s"] > 0, comps
    if mode == "push":
        assert comps["worker"]["children_s"] > 0, comps


def test_an_unreachable_gateway_is_named(tmp_path: Path) -> None:
    r = subprocess.run([str(sb.LOADGEN), "--url", "http://127.0.0.1:1", "--python", sb.PYTHON,
                        "submit", "--tasks", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "connect to 127.0.0.1:1" in r.stderr, r.stderr


def test_a_drain_against_a_running_dispatcher_is_refused(tmp_path: Path) -> None:
    """The drain reads Redis directly: when the queue does not hold the tasks it just submitted
    (a dispatcher already runs, or the schema changed) it fails instead of mismeasuring."""
    from faas_client import Client

    s = sb.ServerStack(tmp_path, "local", "reuse", backend=True).start()
    try:
        c = Client(s.url)
        assert c.wait(c.execute(c.register(lambda: None)), timeout=30)[0] == "COMPLETED"
        r = subprocess.run([str(sb.LOADGEN), "--url", s.url, "--python", sb.PYTHON, "-c", "8",
                            "drain", "--tasks", "1000", "--redis", s.redis_url],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    finally:
        s.stop()
    assert r.returncode == 1 and "is a dispatcher already running" in r.stderr, r.stderr
    assert "READY" not in r.stdout


def test_weak_scaling_point_and_plots(tmp_path: Path) -> None:
    """One weak-scaling point (4 processes × 5 sleep tasks) on a running deployment: every task
    ran, the makespan is at least the ideal 0.5 s, and the harness draws both plots."""
    name = "weak-local-reuse-4"
    r = sb.run_stage(name, sb.stages(True, 4)[name], tmp_path)
    d = sb.phase(r, "drain")["drain"]
    assert d["tasks"] == d["completed"] == 20, d
    assert sb.WEAK_IDEAL_S <= sb.weak_makespan_s(r) < 60, sb.weak_makespan_s(r)
    assert 0 < sb.headline(name, r) <= 1.0
    runs = [{"stage": name, "run": 0, "probe_before_s": 0.1, "probe_after_s": 0.1, "report": r}]
    accept = sb.run_stage("accept", {**sb.stages(True, 4)["accept"],
                                     "args": ["-c", "4", "submit", "--tasks", "50"]}, tmp_path)
    runs.append({"stage": "accept", "run": 0, "probe_before_s": 0.1, "probe_after_s": 0.1,
                 "report": accept})
    sb.plots(sb.summarize(runs), tmp_path)
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "weak_scaling_server.png").stat().st_size > 0


def test_floors_measure_both_isolation_modes() -> None:
    """bench/floors.py (the machine's floors quoted in docs/performance.md) runs and counts."""
    from floors import floors

    got = floors(seconds=0.3, workers=2)
    assert set(got) == {"fork", "reuse"} and got["fork"] > 0 and got["reuse"] > got["fork"], got


def test_weak_floor_runs_every_task_in_both_isolation_modes() -> None:
    """bench/floors.py's weak-scaling floor runs every task: 3 processes × 2 tasks of 50 ms take
    at least the two rounds' 0.1 s (efficiency at most 1), and it returns (all results read,
    all processes reaped)."""
    from floors import weak_floor

    for iso in ("reuse", "fork"):
        eff = weak_floor(3, iso, per_process=2, task_s=0.05)
        assert 0.3 < eff <= 1.0, (iso, eff)


def test_the_python_peer_serves_the_same_api(tmp_path: Path) -> None:
    """bench/pyfaas.py (the Python implementation measured beside faas) takes the load
    generator's submits and runs its tasks end to end."""
    st = sb.stages(True, 4)
    p = sb.phase(sb.run_stage("peer-accept", {**st["peer-accept"],
                                              "args": ["-c", "4", "submit", "--tasks", "40"]},
                              tmp_path), "submit")
    assert (p["ops"], p["errors"]) == (40, 0), p
    r = sb.run_stage("peer-closed", {**st["peer-closed"],
                                     "args": ["-c", "2", "closed", "--duration", "1", "--warmup", "0.3"]},
                     tmp_path)
    p = sb.phase(r, "closed")
    assert p["ops"] > 0 and p["errors"] == 0, p
    assert p["cpu"]["components"]["dispatcher"]["children_s"] > 0, p["cpu"]
