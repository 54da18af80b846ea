"""The demo ledger: derived from what the sandbox providers report, with the promised breaks and
budget overrun, deterministic, and readable on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from usage_orchestration.ledger.sql import SqlLedger
from usage_orchestration.sandbox.demo_ledger import (
    ANALYTICS_WAREHOUSE,
    SALES_DASHBOARD,
    SUPPORT_BOT,
    seed_demo_ledger,
)
from usage_orchestration.sandbox.phala import compute_minutes
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.settings.defaults import PHALA_APP_SALES, PHALA_APP_SUPPORT

# April 25 .. May 20: the current month is May (20 days), with a previous month
DAYS = [date(2026, 4, 25) + timedelta(days=i) for i in range(26)]
APPS = {SALES_DASHBOARD: PHALA_APP_SALES, SUPPORT_BOT: PHALA_APP_SUPPORT}


@pytest.fixture
def settings(tmp_path: Path) -> UsageSettings:
    # Phala only: the expected figures below come from the Phala sandbox
    return load_settings(
        state_dir=str(tmp_path / "state"), neon={"enabled": False}, forge={"enabled": False}
    )


def _expected_credits(entity_id: str, day: date) -> Decimal:
    # Phala compute minutes × 60 s × 0.01 credits per second (the demo rate card)
    return (compute_minutes(7, APPS[entity_id], day) * 60 * Decimal("0.01")).quantize(
        Decimal("0.000001")
    )


def test_demo_ledger_has_the_breaks_and_the_overrun(
    ledger_url: str, settings: UsageSettings
) -> None:
    summary = seed_demo_ledger(ledger_url, settings, DAYS, seed=7)
    reader = SqlLedger(ledger_url)
    breaks = {b["kind"]: b for b in summary["breaks"]}
    assert set(breaks) == {"ledger_under", "missing_in_ledger", "missing_at_provider"}
    assert all(b["day"].month == 5 for b in breaks.values())  # in the current month

    # every other (day, app) is charged exactly what the provider reports
    broken = {(b["day"], b["entity_id"]) for b in summary["breaks"]}
    for day in DAYS:
        got = {u.entity_id: u for u in reader.daily_usage(day) if u.resource_type == "app_compute"}
        for eid in APPS:
            if (day, eid) in broken:
                continue
            assert got[eid].credits == _expected_credits(eid, day), (day, eid)
            assert got[eid].quantity == compute_minutes(7, APPS[eid], day) * 60
            assert got[eid].unit == "second" and got[eid].events >= 4

    under = breaks["ledger_under"]
    got = {
        u.entity_id: u for u in reader.daily_usage(under["day"]) if u.resource_type == "app_compute"
    }
    expected = _expected_credits(under["entity_id"], under["day"])
    assert got[under["entity_id"]].credits == (expected * Decimal("0.7")).quantize(
        Decimal("0.000001")
    )

    missing = breaks["missing_in_ledger"]
    assert (missing["entity_id"], missing["resource_type"]) not in {
        (u.entity_id, u.resource_type) for u in reader.daily_usage(missing["day"])
    }
    assert (
        compute_minutes(7, APPS[missing["entity_id"]], missing["day"]) > 0
    )  # the provider did report it

    orphan = breaks["missing_at_provider"]
    assert orphan["entity_id"] == ANALYTICS_WAREHOUSE
    assert (orphan["entity_id"], orphan["resource_type"]) not in {
        (m.entity_id, m.resource_type) for m in settings.mappings
    }
    rows = [
        u
        for u in reader.daily_usage(orphan["day"])
        if (u.entity_id, u.resource_type) == (ANALYTICS_WAREHOUSE, orphan["resource_type"])
    ]
    assert len(rows) == 1 and rows[0].credits > 0

    # budgets: Support Bot above 100 % in May (month to date), everyone else under, also by forecast
    used: dict[str, Decimal] = {}
    for _d, eid, _t, _rt, credits in reader.credits_by_day(date(2026, 5, 1), date(2026, 5, 20)):
        used[eid] = used.get(eid, Decimal(0)) + credits
    budgets = {b.entity_id: b.monthly_budget for b in reader.budgets("2026-05")}
    assert used[SUPPORT_BOT] > budgets[SUPPORT_BOT]
    for eid, budget in budgets.items():
        if eid != SUPPORT_BOT:
            assert used.get(eid, Decimal(0)) / 20 * 31 < budget, eid
    assert [o["entity_id"] for o in summary["over_budget"]] == [SUPPORT_BOT]
    # April's budgets hold April's figures: nobody was over then
    april_used: dict[str, Decimal] = {}
    for _d, eid, _t, _rt, credits in reader.credits_by_day(date(2026, 4, 25), date(2026, 4, 30)):
        april_used[eid] = april_used.get(eid, Decimal(0)) + credits
    for b in reader.budgets("2026-04"):
        assert april_used.get(b.entity_id, Decimal(0)) < b.monthly_budget

    pool = reader.credit_pool(date(2026, 5, 20))
    assert pool.used == sum(used.values()) and Decimal(0) < pool.used < pool.included
    assert reader.sync_status().last_sync_failed_at is None
    assert {b.entity_id: b.name for b in reader.budgets("2026-05")}[SUPPORT_BOT] == "Support Bot"
    reader.close()


def test_demo_ledger_is_deterministic_and_reseeding_replaces(
    ledger_url: str, settings: UsageSettings, tmp_path: Path
) -> None:
    days = DAYS[-5:]
    first = seed_demo_ledger(ledger_url, settings, days, seed=7)
    reader = SqlLedger(ledger_url)
    before = [reader.daily_usage(d) for d in days]
    again = seed_demo_ledger(ledger_url, settings, days, seed=7)  # wipes and rewrites
    assert [reader.daily_usage(d) for d in days] == before
    assert again["events"] == first["events"]
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    seed_demo_ledger(other, settings, days, seed=8)
    assert [SqlLedger(other).daily_usage(d) for d in days] != before
    reader.close()


def test_sync_failure_is_recorded(ledger_url: str, settings: UsageSettings) -> None:
    seed_demo_ledger(ledger_url, settings, DAYS[-3:], seed=7, sync_failure="lm_unreachable")
    status = SqlLedger(ledger_url).sync_status()
    assert status.last_sync_failure_code == "lm_unreachable"
    assert status.last_sync_failed_at is not None and status.synced_at is not None
    assert status.last_sync_failed_at > status.synced_at


@pytest.mark.parametrize("window", [7, 30], ids=["e2e-7-days", "demo-30-days"])
def test_support_bot_overruns_even_when_the_month_has_one_day(window: int, tmp_path: Path) -> None:
    """The demo and the daemon e2e seed the days before today: on a month's 2nd the current
    month holds a single day, and Support Bot must still be over its budget (it was not: a
    1-credit floor sat above its first day's 0.26 credits)."""
    full = load_settings(state_dir=str(tmp_path / "state"))  # every provider, as the demo
    for month in range(1, 13):
        last = date(2027, month, 1)
        days = [last - timedelta(days=i) for i in range(window - 1, -1, -1)]
        url = f"sqlite:///{tmp_path / f'ledger-{month}.sqlite'}"
        summary = seed_demo_ledger(url, full, days, seed=7)
        assert [o["entity_id"] for o in summary["over_budget"]] == [SUPPORT_BOT], last
        reader = SqlLedger(url)
        budget = {b.entity_id: b.monthly_budget for b in reader.budgets(f"{last:%Y-%m}")}
        used = sum(
            (c for _d, eid, _t, _rt, c in reader.credits_by_day(last, last) if eid == SUPPORT_BOT),
            Decimal(0),
        )
        reader.close()
        assert Decimal(0) < budget[SUPPORT_BOT] < used, (last, budget[SUPPORT_BOT], used)
