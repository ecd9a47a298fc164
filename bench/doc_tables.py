"""Prints the Markdown tables of docs/performance.md from a committed run's server.json
(``summary`` as written by faas_serverbench.py): targets, CPU per task per component, latency
and weak scaling. Usage: python bench/doc_tables.py [docs/bench/server.json]"""
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

HEAD = [
    ("accept", "gateway accepts `/execute_function`", "≥ 30,000"),
    ("drain-local-reuse", "local drain, reuse (20,000)", "≥ 15,000"),
    ("drain-pull-reuse", "pull + 1 worker drain, reuse (10,000)", "≥ 10,000"),
    ("drain-push-reuse", "push + 1 worker drain, reuse (10,000)", "≥ 10,000"),
    ("drain-local-fork", "local drain, fork (3,000)", "≥ 700"),
    ("drain-push-fork", "push + 1 worker drain, fork (3,000)", "≥ 700"),
    ("closed-local-reuse", "end to end, closed loop, local reuse (32 outstanding)", "≥ 8,000"),
    ("closed-local-reuse-128", "end to end, closed loop, local reuse (128 outstanding)", "≥ 8,000"),
]
VARIANTS = ["before", "", "prefetch 1", "prefetch 64"]
# The order of a stage's rows in the CPU and latency tables.
ROWS = ["", "before", "prefetch 1", "prefetch 64"]


def cell(s: Optional[Dict[str, Any]], digits: int = 0) -> str:
    if s is None:
        return "—"
    fmt = f"{{:,.{digits}f}}"
    runs = " · ".join(fmt.format(x) for x in s["per_s"])
    return f"**{fmt.format(s['median_per_s'])}** ({runs})"


def by_stage(summary: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {s["stage"]: s for s in summary}


def name(stage: str, variant: str) -> str:
    return f"{stage} [{variant}]" if variant else stage


def targets(st: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| path | target | before (`698a8b3`) | now, default | now, `prefetch = 1` | now, `prefetch = 64` |",
            "|---|---|---|---|---|---|"]
    for stage, label, target in HEAD:
        cells = [cell(st.get(name(stage, v))) for v in VARIANTS]
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cpu(st: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| stage | variant | server CPU ms/task | parts: own + executors (ms/task) | generator ms/task | generator cores |",
            "|---|---|---|---|---|---|"]
    for stage, _, _ in HEAD:
        for v in ROWS:
            s = st.get(name(stage, v))
            if s is None:
                continue
            parts = []
            for comp, (own, kids) in s["cpu_own_children_ms_per_op"].items():
                if comp == "loadgen":
                    continue
                parts.append(f"{comp} {own:.3f}" + (f" + {kids:.3f}" if kids else ""))
            rows.append(f"| {stage} | {v or 'default'} | {s['server_cpu_ms_per_op']:.3f} | {', '.join(parts)} | "
                        f"{s['loadgen_cpu_ms_per_op']:.3f} | {s['loadgen_cores']:.3f} |")
    return "\n".join(rows)


def latency(st: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| stage | variant | p50 ms | p99 ms |", "|---|---|---|---|"]
    peers = {"peer-accept": "Python peer, accept",
             "peer-closed": "Python peer, closed loop (polls every 2 ms)"}
    for stage in ["accept", "closed-local-reuse", "closed-local-reuse-128", *peers]:
        for v in ROWS:
            s = st.get(name(stage, v))
            if s is None or not s.get("median_p50_us"):
                continue
            label = f"{peers[stage]} | —" if stage in peers else f"{stage} | {v or 'default'}"
            rows.append(f"| {label} | {s['median_p50_us'] / 1000:.2f} | {s['median_p99_us'] / 1000:.2f} |")
    return "\n".join(rows)


def weak(st: Dict[str, Dict[str, Any]]) -> str:
    cols = [("weak-local-reuse", ""), ("weak-local-reuse", "prefetch 1"), ("weak-local-fork", ""),
            ("weak-push-reuse", "")]
    rows = ["| processes | local reuse | local reuse, prefetch 1 | local fork | push reuse |",
            "|---|---|---|---|---|"]
    for n in (1, 4, 16, 64):
        cells = [cell(st.get(name(f"{c}-{n}", v)), 3) for c, v in cols]
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: List[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "docs" / "bench" / "server.json"
    st = by_stage(json.loads(path.read_text())["summary"])
    for title, table in [("targets", targets(st)), ("CPU per task", cpu(st)), ("latency", latency(st)),
                         ("weak scaling", weak(st))]:
        print(f"## {title}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
