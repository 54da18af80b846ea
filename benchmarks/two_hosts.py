"""Two "hosts" (two processes, each with its own state dir) fetch Forge usage at the same moment
against one sandbox limit, drawing from one request budget in the shared warehouse, and check
that together they stay exactly at the limit.

    .venv/bin/python benchmarks/two_hosts.py [--apps 20 --max-requests 5 --per-seconds 1
        --warehouse-url postgresql://... --backend warehouse|file]

The sandbox (on loopback, in this process) enforces ``max_requests`` per ``per_seconds`` for the
account both hosts use and answers 429 above it. ``--backend file`` is the negative control:
each host keeps the file budget of its own state dir and together they exceed the limit.
``wall_s`` runs from the moment both processes are ready until both have their rows. The last
line printed is a JSON object; the exit status is 0 only when ``requests == minimum_requests``
and no request was refused (so the control exits 1).

Figures:
- ``requests``: requests the sandbox received (every status); ``http_429``: how many it refused.
- ``minimum_requests``: one page per app (``days`` days each): 2 × ``apps``.
- ``rate_limit_floor_s``: ``(minimum_requests - 1) // max_requests * per_seconds``; the budget's
  own floor adds the margin to every window: ``budget_floor_s``.
- ``acquire_ms_p50`` / ``acquire_ms_p95``: one uncontended slot taken from the warehouse budget
  (a transaction under the budget's lock), in this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _acquire_ms(warehouse_url: str, n: int = 200) -> list[float]:
    from usage_orchestration.warehouse.request_budget import WarehouseRequestBudget
    from usage_orchestration.warehouse.store import Warehouse

    budget = WarehouseRequestBudget(Warehouse(warehouse_url), "bench", "latency", n + 1, 3600.0)
    budget.acquire()  # schema and connection pool warm
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        budget.acquire()
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", type=int, default=20, help="apps per host (one request each)")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--max-requests", type=int, default=5)
    p.add_argument("--per-seconds", type=float, default=1.0)
    p.add_argument("--margin-s", type=float, default=0.1, help="client budget safety margin")
    p.add_argument("--backend", choices=["warehouse", "file"], default="warehouse")
    p.add_argument("--warehouse-url", default=None, help="default: a temporary SQLite file")
    a = p.parse_args(argv)

    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.sandbox.server import SandboxServer
    from usage_orchestration.warehouse.store import safe_url
    from usage_orchestration_tests.two_hosts_support import Load, run_two_hosts

    tmp = Path(tempfile.mkdtemp(prefix="two-hosts-bench-"))
    warehouse_url = a.warehouse_url or f"sqlite:///{tmp / 'warehouse.sqlite'}"
    load = Load(
        apps_per_host=a.apps,
        days_per_app=a.days,
        max_requests=a.max_requests,
        per_seconds=a.per_seconds,
        margin_s=a.margin_s,
    )
    sb = Sandbox(seed=7)
    server = SandboxServer(sb).start()
    try:
        hosts = [tmp / "host-a" / "state", tmp / "host-b" / "state"]
        results, wall_s = run_two_hosts(sb, server.url, warehouse_url, hosts, a.backend, load)
    finally:
        server.stop()
    latency = _acquire_ms(warehouse_url)
    minimum = load.minimum_requests
    floor_s = (minimum - 1) // a.max_requests * a.per_seconds
    budget_floor_s = (minimum - 1) // a.max_requests * (a.per_seconds + a.margin_s)
    for r in results:
        print(
            f"host {r.host}: requests={r.requests} rows={r.rows} "
            f"budget_wait_s={r.budget_wait_s:.3f}"
        )
    print(f"backend: {a.backend}; warehouse: {safe_url(warehouse_url)}")
    summary = {
        "backend": a.backend,
        "hosts": len(results),
        "apps_per_host": a.apps,
        "rate_limit": f"{a.max_requests}/{a.per_seconds:g}s",
        "margin_s": a.margin_s,
        "rows": sum(r.rows for r in results),
        "wall_s": round(wall_s, 3),
        "rate_limit_floor_s": floor_s,
        "wall_over_floor": round(wall_s / floor_s, 3) if floor_s else None,
        "budget_floor_s": round(budget_floor_s, 3),
        "acquire_ms_p50": round(statistics.median(latency), 2),
        "acquire_ms_p95": round(latency[int(len(latency) * 0.95) - 1], 2),
        "requests": sb.request_count("forge"),
        "minimum_requests": minimum,
        "http_429": sb.request_count("forge", 429),
    }
    print(json.dumps(summary))
    ok = summary["requests"] == minimum and summary["http_429"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
