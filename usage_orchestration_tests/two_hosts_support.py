"""Two "hosts" against one sandbox limit: two processes, each with its own state dir, that load
their settings as a deployment would and fetch Forge usage at the same moment. Used by
``test_request_budget.py`` and ``benchmarks/two_hosts.py``; this module imports no Dagster and
no test module, so a spawned host starts quickly."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from usage_orchestration.sandbox import Sandbox


@dataclass(frozen=True)
class Load:
    """What each host fetches and under which limit (the sandbox's and the clients')."""

    apps_per_host: int = 6
    days_per_app: int = 4  # one page per app: one request per app when nothing is refused
    max_requests: int = 4
    per_seconds: float = 0.5
    # the budget's window is per_seconds + margin_s: the margin covers the time between taking
    # a slot and the request's arrival at the provider (scheduling on a loaded machine)
    margin_s: float = 0.25

    @property
    def minimum_requests(self) -> int:
        return 2 * self.apps_per_host


@dataclass(frozen=True)
class HostResult:
    host: int
    requests: int
    rows: int
    budget_wait_s: float


def host_main(
    url: str,
    warehouse_url: str,
    state_dir: str,
    backend: str,
    load: Load,
    host: int,
    ready: Any,
    start: Any,
    out: Any,
) -> None:
    """One host: its own process and state dir, settings as a deployment would load them."""
    from usage_orchestration.providers.registry import FORGE
    from usage_orchestration.settings import load_settings
    from usage_orchestration.warehouse.request_budget import request_budgets
    from usage_orchestration.warehouse.store import Warehouse

    settings = load_settings(
        warehouse_url=warehouse_url,
        state_dir=state_dir,
        request_budget={"backend": backend},
        forge={
            "base_url": f"{url}/forge/graphql",
            "apps": [{"app_id": f"app-{host}-{i}"} for i in range(load.apps_per_host)],
            "rate_limit_max_requests": load.max_requests,
            "rate_limit_per_seconds": load.per_seconds,
            "rate_limit_margin_s": load.margin_s,
            "max_attempts": 20,
            "retry_after_cap_s": 1.0,
        },
    )
    budgets = request_budgets(settings, Warehouse(warehouse_url))
    credentials = {"email": Sandbox.API_KEYS["forge_email"], "api_token": Sandbox.API_KEYS["forge"]}
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=d) for d in range(2, 2 + load.days_per_app)]
    ready.put(host)
    start.wait(120)
    result = FORGE.fetch(settings, credentials, days, budgets=budgets)
    out.put(HostResult(host, result.requests, len(result.rows), result.budget_wait_s))


def _get(q: Any, procs: list[Any], timeout_s: float) -> Any:
    """The next item of ``q``; fail fast when a worker process died instead."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a worker process failed (exit codes {dead})") from None
    raise TimeoutError("timed out waiting for the host processes")


def run_two_hosts(
    sandbox: Sandbox,
    url: str,
    warehouse_url: str,
    state_dirs: list[Path],
    backend: str,
    load: Load = Load(),
) -> tuple[list[HostResult], float]:
    """Both hosts' results and the wall time from the start signal to the last result. The
    sandbox served at ``url`` enforces ``load``'s limit per account (both hosts use one)."""
    from usage_orchestration.warehouse.store import Warehouse

    sandbox.state["forge"] = {
        "rate_limit": {"max_requests": load.max_requests, "per_seconds": load.per_seconds}
    }
    Warehouse(warehouse_url).ensure_schema()  # deployed before the runs start
    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=host_main,
            args=(url, warehouse_url, str(d), backend, load, i, ready, start, out),
        )
        for i, d in enumerate(state_dirs)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:  # both have imported everything and loaded their settings
            _get(ready, procs, 120)
        t0 = time.monotonic()
        start.set()
        results = [_get(out, procs, 120) for _ in procs]
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a host process failed (exit codes {[p.exitcode for p in procs]})")
    return sorted(results, key=lambda r: r.host), elapsed


def taker_main(
    warehouse_url: str, attempts: int, max_requests: int, ready: Any, start: Any, out: Any
) -> None:
    """Try to take a slot ``attempts`` times without waiting; put how many were granted."""
    from usage_orchestration.warehouse.request_budget import WarehouseRequestBudget
    from usage_orchestration.warehouse.store import Warehouse

    budget = WarehouseRequestBudget(Warehouse(warehouse_url), "forge", "race", max_requests, 3600)
    ready.put(1)
    start.wait(120)
    out.put(sum(budget.try_acquire() is None for _ in range(attempts)))


def run_takers(warehouse_url: str, processes: int, attempts: int, max_requests: int) -> list[int]:
    """Slots granted to each of ``processes`` processes racing for one window (an hour long,
    so nothing leaves it while they race)."""
    from usage_orchestration.warehouse.store import Warehouse

    Warehouse(warehouse_url).ensure_schema()
    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=taker_main, args=(warehouse_url, attempts, max_requests, ready, start, out)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            _get(ready, procs, 120)
        start.set()
        granted = [_get(out, procs, 120) for _ in procs]
    finally:
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a taker process failed (exit codes {[p.exitcode for p in procs]})")
    return granted
