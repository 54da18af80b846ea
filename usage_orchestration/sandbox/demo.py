"""``usage-orchestration demo``: the whole loop on the embedded default.

Starts the sandbox (refusing a port another sandbox or process holds), seeds the demo ledger,
materializes the last 30 complete UTC days of every asset through Dagster as one run into the
persistent instance at ``$DAGSTER_HOME`` (``.dagster/`` by default), then the monthly statement
of each month those days touch (table, CSV, HTML), evaluates the alert sensors
as the daemon would, and prints a summary (also written to ``.data/demo_summary.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from usage_orchestration.core.money import format_credits
from usage_orchestration.sandbox.core import Sandbox
from usage_orchestration.sandbox.demo_ledger import seed_demo_ledger

# The environment variable each secret is read from → the key the sandbox accepts for it.
SANDBOX_SECRETS = {
    env: Sandbox.API_KEYS[api]
    for env, api in (
        ("PHALA_API_KEY", "phala"),
        ("NEON_API_KEY", "neon"),
        ("FORGE_EMAIL", "forge_email"),
        ("FORGE_API_TOKEN", "forge"),
        ("LEDGER_API_TOKEN", "ledger"),
        ("PAGERDUTY_ROUTING_KEY", "pagerduty"),
    )
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the whole loop against the sandbox (30 days)")
    p.add_argument("--days", type=int, default=30, help="complete UTC days to materialize")
    p.add_argument("--summary-file", default=".data/demo_summary.json")
    p.set_defaults(func=run_demo)


def sandbox_env() -> None:
    """Sandbox credentials for any secret the environment does not set (never overrides)."""
    for k, v in SANDBOX_SECRETS.items():
        os.environ.setdefault(k, v)


def _ensure_dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and Path("dagster.yaml").exists():
        shutil.copy("dagster.yaml", home / "dagster.yaml")
    return home


def run_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from usage_orchestration.sandbox.server import SandboxServer
    from usage_orchestration.settings import load_settings

    settings = load_settings()
    sandbox_env()
    home = _ensure_dagster_home()
    os.environ.setdefault(
        "SLACK_WEBHOOK_URL", f"{settings.sandbox.url}/slack/services/T0DEMO/B0DEMO/demo"
    )

    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in range(args.days, 0, -1)]
    print(f"demo: {days[0]} .. {days[-1]} ({len(days)} complete UTC days), DAGSTER_HOME={home}")

    # Never another sandbox's (its data, clock and faults are not this run's): a taken port
    # fails here with PortTakenError naming it.
    in_process: Sandbox | None = Sandbox(
        seed=settings.sandbox.seed, ledger_url=settings.ledger.database_url
    )
    server: SandboxServer | None = SandboxServer(
        in_process, settings.sandbox.host, settings.sandbox.port
    ).start()
    print(f"demo: sandbox serving on {server.url}")
    try:
        seeded = _seed_ledger(settings, days)
        print(f"demo: seeded the demo ledger: {json.dumps(seeded, default=str)}")
        from usage_orchestration.definitions import defs

        instance = DagsterInstance.get()
        job = defs.resolve_job_def("daily_usage_job")
        result = job.execute_in_process(
            instance=instance,
            # INFO, not DEBUG: one line per step event of 30 partitions would bury the summary
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
                "usage/origin": "demo",
            },
            raise_on_error=False,
        )
        print(f"demo: run {result.run_id} {'succeeded' if result.success else 'FAILED'}")
        statements = _statements(defs, instance, days, result.success)
        ticks = _evaluate_sensors(defs, instance)
        _deliver_alerts(defs, instance)
        pages = _pages(settings.sandbox.url, in_process)
        summary = build_summary(
            settings.warehouse_url, days, ticks, pages, result.run_id, result.success
        )
        summary["statements"] = statements
    finally:
        if server is not None:
            server.stop()
    print(format_summary(summary))
    out = Path(args.summary_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if result.success and all(st["success"] for st in statements) else 1


def _seed_ledger(settings: Any, days: list[date]) -> dict[str, Any]:
    return seed_demo_ledger(settings.ledger.database_url, settings, days, settings.sandbox.seed)


def _statements(defs: Any, instance: Any, days: list[date], ok: bool) -> list[dict[str, Any]]:
    """The monthly statement of every month the demo's days touch (after the daily assets);
    each month's files and whether it is closed, from the materialization's metadata."""
    from usage_orchestration.defs.statement import MONTHLY_STATEMENT, STATEMENT_JOB

    if not ok:
        return []
    job = defs.resolve_job_def(STATEMENT_JOB)
    out: list[dict[str, Any]] = []
    for month in sorted({d.replace(day=1) for d in days}):
        run = job.execute_in_process(
            instance=instance,
            partition_key=month.isoformat(),
            tags={"usage/origin": "demo"},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
        found = run.asset_materializations_for_node(MONTHLY_STATEMENT.path[-1])
        meta = found[0].metadata if run.success and found else {}
        out.append(
            {
                "month": month.strftime("%Y-%m"),
                "success": run.success,
                "closed": meta["closed"].value if "closed" in meta else None,
                "html": meta["html"].value if "html" in meta else None,
                "csv": meta["csv"].value if "csv" in meta else None,
            }
        )
    return out


def _evaluate_sensors(defs: Any, instance: Any) -> list[dict[str, Any]]:
    """Tick every sensor once, as the daemon would (run-status sensors react to runs and are
    left to the daemon)."""
    from dagster import RunStatusSensorDefinition, build_sensor_context

    ticks: list[dict[str, Any]] = []
    for sensor_def in defs.sensors or []:
        if isinstance(sensor_def, RunStatusSensorDefinition):
            continue
        with build_sensor_context(
            instance=instance,
            definitions=defs,
            sensor_name=sensor_def.name,
            resources=defs.resources,
        ) as ctx:
            data = sensor_def.evaluate_tick(ctx)
        ticks.append(
            {
                "sensor": sensor_def.name,
                "run_requests": len(data.run_requests or []),
                "skip_message": data.skip_message,
                "cursor": data.cursor,
            }
        )
    return ticks


def _deliver_alerts(defs: Any, instance: Any) -> None:
    """The run the ``alert_delivery`` sensor requests once alerts are due: sensors only record,
    this run sends (so a previewed tick pages nobody)."""
    from usage_orchestration.defs.alerts import DELIVERY_JOB

    job = defs.resolve_job_def(DELIVERY_JOB)
    job.execute_in_process(
        instance=instance,
        tags={"usage/origin": "demo"},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


def _pages(url: str, sandbox: Any) -> list[dict[str, Any]]:
    if sandbox is not None:
        return sandbox.received("pagerduty")
    try:
        return httpx.get(f"{url}/_sandbox/received/pagerduty", timeout=5).json()
    except httpx.HTTPError:
        return []


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, date | datetime):
        return v.isoformat()
    return v


def build_summary(
    warehouse_url: str,
    days: list[date],
    ticks: list[dict[str, Any]],
    pages: list[dict[str, Any]],
    run_id: str,
    success: bool,
) -> dict[str, Any]:
    """What the demo shows, read back from the warehouse (aggregated in SQL)."""
    from usage_orchestration.warehouse.store import Warehouse

    wh = Warehouse(warehouse_url)
    wh.ensure_schema()
    summary: dict[str, Any] = {"run_id": run_id, "success": success, "days": [days[0], days[-1]]}
    with wh.engine.connect() as conn:
        summary["providers"] = _provider_days(conn, days)
        summary["reconciliation_by_status"] = _reconciliation_by_status(conn, days)
        summary["budgets_as_of"], summary["budgets"] = _latest_budgets(conn)
        pool = _latest_credit_pool(conn)
        if pool is not None:
            summary["credit_pool"] = pool
        summary["alerts_by_state"] = _alerts_by_state(conn)
    summary["sensor_ticks"] = ticks
    summary["pages"] = [
        {
            "event_action": p.get("event_action"),
            "dedup_key": p.get("dedup_key"),
            "summary": (p.get("event") or {}).get("payload", {}).get("summary"),
        }
        for p in pages
    ]
    return summary


def _records(conn: Any, query: Any) -> list[dict[str, Any]]:
    """A query's rows as JSON-ready dicts."""
    return [{k: _jsonable(v) for k, v in r._mapping.items()} for r in conn.execute(query)]


def _provider_days(conn: Any, days: list[date]) -> list[dict[str, Any]]:
    """Per provider: rows and days of usage in the demo window."""
    from sqlalchemy import func, select

    from usage_orchestration.warehouse.schema import provider_usage as t

    return _records(
        conn,
        select(
            t.c.provider,
            func.count().label("rows"),
            func.count(func.distinct(t.c.usage_date)).label("days"),
            func.min(t.c.usage_date).label("first_day"),
            func.max(t.c.usage_date).label("last_day"),
        )
        .where(t.c.usage_date.between(days[0], days[-1]))
        .group_by(t.c.provider)
        .order_by(t.c.provider),
    )


def _reconciliation_by_status(conn: Any, days: list[date]) -> dict[str, dict[str, Any]]:
    from sqlalchemy import func, select

    from usage_orchestration.warehouse.analysis_schema import usage_reconciliation as rec
    from usage_orchestration.warehouse.types import exact_sum

    return {
        r.status: {"rows": r.rows, "delta_credits": _jsonable(r.delta)}
        for r in conn.execute(
            select(
                rec.c.status,
                func.count().label("rows"),
                exact_sum(rec.c.delta_credits).label("delta"),
            )
            .where(rec.c.usage_date.between(days[0], days[-1]))
            .group_by(rec.c.status)
        )
    }


def _latest_budgets(conn: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The last day with budget figures and every entity's budget that day."""
    from sqlalchemy import func, select

    from usage_orchestration.warehouse.analysis_schema import budget_status as bs

    last = conn.execute(select(func.max(bs.c.as_of_date))).scalar()
    rows = _records(
        conn,
        select(
            bs.c.entity_id,
            bs.c.entity_name,
            bs.c.credits_used,
            bs.c.monthly_budget,
            bs.c.budget_percent,
            bs.c.over_budget,
            bs.c.forecast_month_end,
            bs.c.forecast_overrun,
        )
        .where(bs.c.as_of_date == last)
        .order_by(bs.c.entity_id),
    )
    return _jsonable(last), rows


def _latest_credit_pool(conn: Any) -> dict[str, Any] | None:
    from sqlalchemy import select

    from usage_orchestration.warehouse.analysis_schema import credit_pool_status as cp

    row = conn.execute(select(cp).order_by(cp.c.as_of_date.desc()).limit(1)).first()
    if row is None:
        return None
    return {k: _jsonable(v) for k, v in row._mapping.items() if k != "load_id"}


def _alerts_by_state(conn: Any) -> list[dict[str, Any]]:
    from sqlalchemy import func, select

    from usage_orchestration.alerts.outbox import alert_outbox as ob

    return _records(
        conn,
        select(
            ob.c.kind,
            ob.c.state,
            ob.c.channel,
            ob.c.suppressed_reason,
            func.count().label("alerts"),
        )
        .group_by(ob.c.kind, ob.c.state, ob.c.channel, ob.c.suppressed_reason)
        .order_by(ob.c.kind, ob.c.state, ob.c.channel),
    )


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        "",
        "=== usage_orchestration demo summary ===",
        f"days: {s['days'][0]} .. {s['days'][1]}",
    ]
    lines.append("provider rows:")
    for p in s.get("providers", []):
        lines.append(
            f"  {p['provider']:<6} {p['rows']:>7} rows over {p['days']} days ({p['first_day']} .. {p['last_day']})"
        )
    if "reconciliation_by_status" in s:
        lines.append("reconciliation (day × entity × resource type) by status:")
        for status, v in sorted(s["reconciliation_by_status"].items()):
            delta = v["delta_credits"]
            lines.append(
                f"  {status:<20} {v['rows']:>5}"
                + (f"   delta {delta:,.2f} credits" if delta is not None else "")
            )
    if "budgets" in s:
        lines.append(f"budgets as of {s.get('budgets_as_of')}:")
        for b in s["budgets"]:
            pct = b.get("budget_percent")
            fc = b.get("forecast_month_end")
            lines.append(
                f"  {b.get('entity_name') or b['entity_id']:<22} used {b['credits_used']:>10,.2f}"
                + (
                    f" of {b['monthly_budget']:,.2f} ({pct:,.1f} %)"
                    if b.get("monthly_budget") is not None and pct is not None
                    else " (no budget)"
                )
                + (" OVER BUDGET" if b.get("over_budget") else "")
                + (f"; forecast {fc:,.2f}" if fc is not None else "")
            )
    if "credit_pool" in s:
        p = s["credit_pool"]
        depletion = p.get("projected_depletion_date") or "not this month"
        lines.append(
            f"credit pool {p.get('month')} as of {p.get('as_of_date')}: used "
            f"{format_credits(p.get('used'))} of {format_credits(p.get('included'))} "
            f"({p.get('percent_used')} %), {format_credits(p.get('remaining'))} left; "
            f"{format_credits(p.get('daily_run_rate'))} a day, projected depletion {depletion}"
        )
    for st in s.get("statements", []):
        state = "FAILED" if not st["success"] else ("closed" if st["closed"] else "provisional")
        lines.append(f"statement {st['month']} ({state}): {st.get('html')}")
    lines.append(f"sensor ticks: {len(s.get('sensor_ticks', []))}")
    if s.get("alerts_by_state"):
        lines.append("alert outbox (kind, state, channel, not sent because: alerts):")
        for a in s["alerts_by_state"]:
            why = a.get("suppressed_reason") or "-"
            lines.append(
                f"  {a['kind']:<24} {a['state']:<9} {a['channel']:<10} {why:<9} {a['alerts']}"
            )
    lines.append(
        f"pages received by the PagerDuty sandbox in this run: {len(s.get('pages', []))}"
        " (an alert already delivered by an earlier run is not sent again)"
    )
    for p in s.get("pages", [])[:10]:
        lines.append(f"  {p['event_action']:<8} {p['dedup_key']}  {p.get('summary') or ''}")
    return "\n".join(lines)
