"""Backfill 60 days × 500 Neon projects against the sandbox with two concurrent runs.

The sandbox (loopback, this process) serves an org of ``--projects`` projects and enforces a
per-account rate limit (``--sandbox-limit`` requests per ``--window-s``, a scaled-down
"about 50 requests a minute"). Two worker processes each materialize ``neon_usage`` over half of
the range as ONE Dagster run (single-run backfill, range tags) into one shared warehouse, with
the client-side budget (``--client-limit`` per ``--window-s``) in one state file shared by both.

The last line printed is a JSON object:
- ``requests``: HTTP requests the two runs sent (from their materialization metadata);
- ``minimum_requests``: chunks × pages for each run's range, summed over the runs (org mode:
  one chunk; pages = projects // limit + 1 because the last page still carries a cursor, so a
  full last page needs one more, empty, page; ids mode: one request per chunk of ≤ 100 ids);
- ``http_429``: 429s the sandbox sent; ``wall_s``: wall time of the two concurrent runs.

    .venv/bin/python benchmarks/neon_backfill.py [--projects 500] [--days 60] [--mode org|ids]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

KEY = "sandbox-neon-key"


def worker(args: argparse.Namespace) -> None:
    from dagster import DagsterInstance, materialize

    from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
    from usage_orchestration.defs.resources import WarehouseResource
    from usage_orchestration.providers.registry import NEON
    from usage_orchestration.settings import load_settings

    neon: dict[str, object] = {
        "base_url": f"{args.sandbox_url}/neon",
        "rate_limit_requests": args.client_limit,
        "rate_limit_window_s": args.window_s,
    }
    if args.mode == "ids":
        from usage_orchestration.sandbox.neon import project_ids

        neon["project_ids"] = project_ids(7, args.projects)
    settings = load_settings(warehouse_url=args.warehouse_url, state_dir=args.state_dir, neon=neon)
    result = materialize(
        [provider_asset(NEON, settings)],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            "neon_api": ProviderApiResource(values={"api_key": KEY}),
        },
        instance=DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": args.first,
            "dagster/asset_partition_range_end": args.last,
        },
    )
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("neon_usage")[-1].metadata.items()
    }
    print(
        json.dumps(
            {
                "success": result.success,
                "first": args.first,
                "last": args.last,
                "rows": meta["rows_written"],
                **{
                    k: meta[k]
                    for k in (
                        "requests",
                        "retries",
                        "days",
                        "days_unavailable",
                        "budget_wait_s",
                    )
                },
            }
        )
    )


def main(args: argparse.Namespace) -> None:
    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.sandbox.server import SandboxServer

    sb = Sandbox(seed=7)
    sb.state["neon"] = {
        "projects": args.projects,
        "rate_limit": args.sandbox_limit,
        "rate_window_s": args.window_s,
    }
    server = SandboxServer(sb).start()
    tmp = Path(tempfile.mkdtemp(prefix="neon-bench-"))
    today = datetime.now(UTC).date()
    # the newest `days` days: all inside Neon's 60-day daily window (today is partial)
    first = today - timedelta(days=args.days - 1)
    half = args.days // 2
    ranges = [(first, first + timedelta(days=half - 1)), (first + timedelta(days=half), today)]
    common = [
        sys.executable, __file__, "--worker",
        "--sandbox-url", server.url,
        "--warehouse-url", args.warehouse_url or f"sqlite:///{tmp / 'warehouse.sqlite'}",
        "--state-dir", str(tmp / "state"),
        "--projects", str(args.projects),
        "--mode", args.mode,
        "--client-limit", str(args.client_limit),
        "--window-s", str(args.window_s),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*common, "--first", a.isoformat(), "--last", b.isoformat()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for a, b in ranges
    ]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - started
    server.stop()
    runs = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0 or not out.strip():
            print(err[-3000:], file=sys.stderr)
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    if args.mode == "ids":
        per_run = math.ceil(args.projects / 100)  # one request per chunk of ≤ 100 ids
    else:
        per_run = args.projects // 100 + 1  # pages, the last one short or empty
    for r in runs:
        print(f"run {r['first']}..{r['last']}: {r['requests']} requests, {r['rows']} rows, "
              f"budget wait {r['budget_wait_s']} s, {r['days_unavailable']} day(s) unavailable")  # fmt: skip
    print(
        json.dumps(
            {
                "requests": sum(r["requests"] for r in runs),
                "minimum_requests": per_run * len(runs),
                "http_429": sb.request_count("neon", 429),
                "wall_s": round(wall, 2),
                "sandbox_requests": sb.request_count("neon"),
                "retries": sum(r["retries"] for r in runs),
                "rows": sum(r["rows"] for r in runs),
                "days": args.days,
                "projects": args.projects,
                "runs": len(runs),
                "mode": args.mode,
                "budget_wait_s": round(sum(r["budget_wait_s"] for r in runs), 2),
                "rate_limit": f"sandbox {args.sandbox_limit}/{args.window_s}s, client {args.client_limit}/{args.window_s}s",
            }
        )
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--projects", type=int, default=500)
    p.add_argument("--days", type=int, default=60)
    p.add_argument(
        "--mode",
        choices=("org", "ids"),
        default="org",
        help="whole org by cursor, or project_ids chunks",
    )
    p.add_argument(
        "--sandbox-limit", type=int, default=5, help="requests the sandbox allows per window"
    )
    p.add_argument(
        "--client-limit", type=int, default=4, help="the client budget per window (below the limit)"
    )
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--warehouse-url", default=None, help="default: a fresh SQLite file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", help=argparse.SUPPRESS)
    p.add_argument("--first", help=argparse.SUPPRESS)
    p.add_argument("--last", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse()
    if ns.worker:
        worker(ns)
    else:
        main(ns)
