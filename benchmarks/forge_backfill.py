"""Backfill Forge usage for 60 days x 20 apps x 2 resources against the sandbox, as two
concurrent Dagster runs (two processes: the first and the second half of the days) under one
scaled rate limit, and check that the shared request budget keeps them exactly at the limit.

    .venv/bin/python benchmarks/forge_backfill.py [--days 60 --apps 20 --max-requests 5 --per-seconds 1]

The sandbox (on loopback, in this process) enforces ``max_requests`` per ``per_seconds`` per
account and answers 429 above it; both runs share one budget file under a temporary
``state_dir``. Every other app is grouped by environment. ``wall_s`` runs from the moment both
processes are ready (imports done) until both runs have finished, Dagster bookkeeping and
warehouse writes included. The last line printed is a JSON object.

Figures:
- ``requests``: requests the sandbox received (every status); ``http_429``: how many it refused.
- ``minimum_requests``: per run and (app, resource) series, ``items // page_size + 1`` pages
  (a short page ends a series; a full last page needs one more, empty, page).
- ``rate_limit_floor_s``: the time the limit itself imposes on ``minimum_requests``:
  ``(minimum_requests - 1) // max_requests * per_seconds`` (the first ``max_requests`` go at once).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

RESOURCES = ["FUNCTION_COMPUTE", "KVS_READ"]


def _apps(n: int) -> list[dict[str, Any]]:
    return [
        {
            "app_id": f"ari:cloud:ecosystem::app/bench-{i:03d}",
            "name": f"Bench app {i}",
            "resources": RESOURCES,
            "group_by": "ENVIRONMENT_ID" if i % 2 else None,
        }
        for i in range(n)
    ]


def _run(args: dict[str, Any], first: str, last: str, ready: Any, start: Any, out: Any) -> None:
    """One Dagster run (single-run backfill of first..last) in its own process."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from dagster import DagsterInstance, materialize

    from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
    from usage_orchestration.defs.resources import WarehouseResource
    from usage_orchestration.providers.registry import FORGE
    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.settings import load_settings

    settings = load_settings(
        warehouse_url=args["warehouse_url"],
        state_dir=args["state_dir"],
        forge={
            "base_url": args["url"] + "/forge/graphql",
            "apps": _apps(args["apps"]),
            "rate_limit_max_requests": args["max_requests"],
            "rate_limit_per_seconds": args["per_seconds"],
            "rate_limit_margin_s": args["margin_s"],
            "max_pages": 1000,
        },
    )
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=settings.warehouse_url),
        "forge_api": ProviderApiResource(
            values={
                "email": Sandbox.API_KEYS["forge_email"],
                "api_token": Sandbox.API_KEYS["forge"],
            }
        ),
    }
    instance = DagsterInstance.ephemeral()
    ready.put(first)
    start.wait(120)
    t0 = time.monotonic()
    result = materialize(
        [provider_asset(FORGE, settings)],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )
    mats = result.asset_materializations_for_node("forge_usage") if result.success else []
    meta = mats[0].metadata if mats else {}
    out.put(
        {
            "range": f"{first}..{last}",
            "success": result.success,
            "partitions": len(mats),
            "rows": meta["rows_written"].value if meta else 0,
            "client_requests": meta["requests"].value if meta else 0,
            "budget_wait_s": meta["budget_wait_s"].value if meta else 0.0,
            "run_s": round(time.monotonic() - t0, 3),
        }
    )


def _get(queue: Any, procs: list[Any], timeout_s: float) -> Any:
    """The next item from ``queue``; fail fast when a worker process died instead."""
    import queue as q

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=0.5)
        except q.Empty:
            dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a run process failed (exit codes {dead})") from None
    raise SystemExit("timed out waiting for the run processes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--apps", type=int, default=20)
    p.add_argument("--max-requests", type=int, default=5)
    p.add_argument("--per-seconds", type=float, default=1.0)
    p.add_argument("--margin-s", type=float, default=0.05, help="client budget safety margin")
    p.add_argument("--page-size", type=int, default=100, help="the sandbox's pageSize")
    p.add_argument("--warehouse-url", default=None, help="default: a temporary SQLite file")
    a = p.parse_args(argv)

    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.sandbox.server import SandboxServer

    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    sb = Sandbox(seed=7)
    sb.state["forge"] = {
        "rate_limit": {"max_requests": a.max_requests, "per_seconds": a.per_seconds},
        "page_size": a.page_size,
    }
    server = SandboxServer(sb).start()
    today = datetime.now(UTC).date()
    days = [
        today - timedelta(days=i) for i in range(a.days, 0, -1)
    ]  # the last N days, through yesterday
    half = len(days) // 2
    ranges = [(days[0], days[half - 1]), (days[half], days[-1])]
    shared = {
        "url": server.url,
        "apps": a.apps,
        "max_requests": a.max_requests,
        "per_seconds": a.per_seconds,
        "margin_s": a.margin_s,
        "state_dir": str(tmp / "state"),
        "warehouse_url": a.warehouse_url or f"sqlite:///{tmp / 'warehouse.sqlite'}",
    }
    # the schema before the runs: two processes creating it at once race on CREATE TABLE
    from usage_orchestration.warehouse.store import Warehouse

    Warehouse(shared["warehouse_url"]).ensure_schema()
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_run, args=(shared, lo.isoformat(), hi.isoformat(), ready, start, out))
        for lo, hi in ranges
    ]
    t_spawn = time.monotonic()
    for proc in procs:
        proc.start()
    for _ in procs:
        _get(ready, procs, 180)
    startup_s = time.monotonic() - t_spawn
    t0, t0_wall = time.monotonic(), time.time()
    start.set()
    runs = [_get(out, procs, 3600) for _ in procs]
    wall_s = time.monotonic() - t0
    end_wall = time.time()
    for proc in procs:
        proc.join(30)
    server.stop()

    def series_pages(lo: date, hi: date) -> int:
        items = (hi - lo).days + 1  # one resourceUsage entry per day, flat or grouped
        return items // a.page_size + 1

    minimum = sum(series_pages(lo, hi) * a.apps * len(RESOURCES) for lo, hi in ranges)
    floor_s = (minimum - 1) // a.max_requests * a.per_seconds
    requests = sb.request_count("forge")
    sent = sorted(e["t"] for e in sb.received("forge"))
    http_429 = sb.request_count("forge", 429)
    for r in runs:
        print(
            f"run {r['range']}: success={r['success']} partitions={r['partitions']} rows={r['rows']} "
            f"requests={r['client_requests']} budget_wait_s={r['budget_wait_s']} run_s={r['run_s']}"
        )
    print(
        f"process startup (not in wall_s): {startup_s:.1f} s; warehouse: {shared['warehouse_url']}"
    )
    summary = {
        "days": a.days,
        "apps": a.apps,
        "resources": len(RESOURCES),
        "concurrent_runs": len(runs),
        "runs_succeeded": sum(bool(r["success"]) for r in runs),
        "rows": sum(int(r["rows"]) for r in runs),
        "rate_limit": f"{a.max_requests}/{a.per_seconds:g}s",
        "page_size": a.page_size,
        "requests": requests,
        "minimum_requests": minimum,
        "http_429": http_429,
        "wall_s": round(wall_s, 3),
        "rate_limit_floor_s": floor_s,
        "wall_over_floor": round(wall_s / floor_s, 3) if floor_s else None,
        # where the rest goes: run start-up before the first request, bookkeeping after the last
        "before_first_request_s": round(sent[0] - t0_wall, 3) if sent else None,
        "after_last_request_s": round(end_wall - sent[-1], 3) if sent else None,
    }
    print(json.dumps(summary))
    ok = (
        summary["runs_succeeded"] == len(runs)
        and requests == minimum
        and http_429 == 0
        and (floor_s == 0 or wall_s <= 1.2 * floor_s)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
