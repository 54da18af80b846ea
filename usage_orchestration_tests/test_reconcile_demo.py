"""On the demo data set (every provider's sandbox usage, the seeded demo ledger), reconciliation
finds exactly the breaks the demo ledger injects, and budgets flag exactly its overrun."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from usage_orchestration.defs.budgets import compute_budgets
from usage_orchestration.ledger.sql import SqlLedger
from usage_orchestration.providers.records import DayCoverage, FetchResult
from usage_orchestration.providers.registry import expected_accounts, reconcile_config
from usage_orchestration.sandbox.demo_ledger import DEMO_USAGE, seed_demo_ledger
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.analysis import reconcile_days
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import ledger_daily_usage
from usage_orchestration.warehouse.store import Warehouse

SEED = 7
DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(12)]


def test_demo_breaks_and_overrun_are_found(tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    settings = load_settings(
        warehouse_url=f"sqlite:///{tmp_path / 'wh.sqlite'}", ledger={"database_url": ledger_url}
    )
    seeded = seed_demo_ledger(ledger_url, settings, DAYS, SEED)
    wh = Warehouse(settings.warehouse_url)
    wh.ensure_schema()

    for provider, accounts in expected_accounts(settings).items():
        rows = [r for d in DAYS for r in DEMO_USAGE[provider](SEED, settings, d)]
        coverage = [
            DayCoverage(provider=provider, account_id=a.account_id, usage_date=d, status="complete")
            for d in DAYS
            for a in accounts
        ]
        store_fetch(wh, provider, DAYS, FetchResult(rows=rows, coverage=coverage), settings, "demo")

    reader = SqlLedger(ledger_url)
    daily = [
        {**u.model_dump(), "unit": u.unit or "", "load_id": "demo"}
        for d in DAYS
        for u in reader.daily_usage(d)
    ]
    wh.replace_days(ledger_daily_usage, DAYS, daily)

    by_day = reconcile_days(wh, DAYS, reconcile_config(settings))
    breaks = sorted(
        (r.status, r.usage_date, r.entity_id, r.resource_type)
        for rows in by_day.values()
        for r in rows
        if r.is_break
    )
    expected = sorted(
        (b["kind"], b["day"], b["entity_id"], b["resource_type"]) for b in seeded["breaks"]
    )
    assert breaks == expected
    assert {r.status for rows in by_day.values() for r in rows} >= {"matched", "unmapped"}

    budgets, pools = compute_budgets(reader, [DAYS[-1]], settings)
    over = sorted(b.entity_id for b in budgets if b.over_budget)
    assert over == sorted(o["entity_id"] for o in seeded["over_budget"])
    assert pools[0].used > 0 and pools[0].included > 0
