"""``budget_status`` (+ credit pool), ``usage_anomalies`` and ``provider_cap_status`` through
Dagster on a real SQL ledger and warehouse (SQLite, and PostgreSQL when USAGE_TEST_POSTGRES_URL
is set), with hand-computed figures and stable history."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D
from typing import Any

from dagster import AssetCheckSeverity, DagsterInstance, materialize
from sqlalchemy import select

from usage_orchestration.defs.budgets import (
    build_budget_status_asset,
    build_provider_caps_asset,
    build_usage_anomalies_asset,
)
from usage_orchestration.defs.ledger import LedgerResource
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.ledger.schema import (
    credit_pool,
    entity,
    entity_budget,
    ledger_metadata,
    usage_event,
)
from usage_orchestration.ledger.sql import SqlLedger
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    credit_pool_status,
    provider_cap_status,
    usage_anomaly,
)
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.store import Warehouse, make_engine

MARCH = date(2026, 3, 1)


def make_settings(db_url: str, ledger_url: str, **kw: Any) -> UsageSettings:
    return load_settings(warehouse_url=db_url, ledger={"database_url": ledger_url}, **kw)


def event(
    day: date, eid: str, credits: str, rt: str = "app_compute", hour: int = 12
) -> dict[str, Any]:
    return {
        "occurred_at": datetime.combine(day, time(hour), tzinfo=UTC),
        "actor": "svc",
        "actor_type": "service",
        "entity_id": eid,
        "entity_type": "app",
        "resource_type": rt,
        "quantity": D(credits) * 100,
        "unit": "second",
        "credits": D(credits),
        "metadata": None,
    }


def seed_ledger(url: str) -> Any:
    engine = make_engine(url)
    ledger_metadata.create_all(engine)
    events = []
    for i in range(14):  # Mar 1..14: a 30 a day (two events of 15), b 30 a day
        d = MARCH + timedelta(days=i)
        events += [
            event(d, "ent-a", "15", hour=1),
            event(d, "ent-a", "15", hour=23),
            event(d, "ent-b", "30"),
        ]
    d15 = date(2026, 3, 15)
    events += [
        event(d15, "ent-a", "90"),
        event(d15, "ent-b", "30"),
        event(date(2026, 3, 10), "ent-a", "100", rt="ai"),
    ]
    with engine.begin() as conn:
        conn.execute(
            entity.insert(),
            [
                {
                    "id": "ent-a",
                    "entity_type": "app",
                    "name": "Sales",
                    "slug": "sales",
                    "owner_id": None,
                },
                {
                    "id": "ent-b",
                    "entity_type": "app",
                    "name": "Bot",
                    "slug": "bot",
                    "owner_id": None,
                },
            ],
        )
        conn.execute(
            entity_budget.insert(),
            [
                {"entity_id": "ent-a", "month": "2026-03", "monthly_budget": D(1000)},
                {"entity_id": "ent-b", "month": "2026-03", "monthly_budget": D(200)},
                {"entity_id": "ent-a", "month": "2026-04", "monthly_budget": D(2000)},
            ],
        )
        conn.execute(credit_pool.insert(), [{"month": "2026-03", "included": D(5000)}])
        conn.execute(usage_event.insert(), events)
    return engine


def run(settings: UsageSettings, assets: list, **kw: Any):
    result = materialize(
        assets,
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            "ledger": LedgerResource(database_url=settings.ledger.database_url),
        },
        instance=DagsterInstance.ephemeral(),
        **kw,
    )
    assert result.success
    return result


def rows_of(db_url: str, table, day_col: str, day: date) -> list[dict[str, Any]]:
    wh = Warehouse(db_url)
    with wh.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(table).where(table.c[day_col] == day))
        ]


def test_budget_status_and_pool_as_of_a_day(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    result = run(settings, [build_budget_status_asset(settings)], partition_key="2026-03-10")
    got = {
        r["entity_id"]: r for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 3, 10))
    }
    a, b = got["ent-a"], got["ent-b"]
    # a: 10 × 30 + 100 (AI) = 400 of 1000 → 40 %; forecast 400 / 10 × 31 = 1240 → overrun 240
    assert (
        a["credits_used"] == D(400)
        and a["budget_percent"] == D(40)
        and a["budget_remaining"] == D(600)
    )
    assert (
        a["forecast_month_end"] == D(1240)
        and a["forecast_overrun"] == D(240)
        and not a["over_budget"]
    )
    assert a["entity_name"] == "Sales" and a["highest_threshold_crossed"] is None
    # b: 300 of 200 → 150 %: over, all thresholds; forecast 930 → overrun 730
    assert (
        b["over_budget"]
        and b["budget_percent"] == D(150)
        and b["thresholds_crossed"] == "50,80,100"
    )
    assert b["forecast_overrun"] == D(730)
    pool = rows_of(db_url, credit_pool_status, "as_of_date", date(2026, 3, 10))[0]
    # 700 of 5000 used: 70 a day → 2170 by month end; 4300 left lasts past the month
    assert (pool["used"], pool["remaining"], pool["daily_run_rate"]) == (D(700), D(4300), D(70))
    assert pool["forecast_month_end_used"] == D(2170) and pool["projected_depletion_date"] is None
    meta = result.asset_materializations_for_node("budget_status")[0].metadata
    assert meta["over_budget"].value == 1 and meta["forecast_overruns"].value == 2
    assert meta["pool_remaining"].value == 4300.0 and "Bot" in [
        r.data["entity_name"] for r in meta["budgets"].records
    ]
    # b over budget: the within_budget check is red (ERROR) and names both entities at risk
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "within_budget" and not check.passed
    assert check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["over_budget"].value == 1
    assert check.metadata["forecast_overruns"].value == 1  # a: forecast only
    assert {r.data["entity_id"] for r in check.metadata["entities"].records} == {"ent-a", "ent-b"}


def test_within_budget_is_green_when_every_entity_is_within_and_on_track(
    db_url: str, ledger_url: str
) -> None:
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    # 2026-04: ent-a's budget is 2000 and it spends far less; ent-b has no April budget
    result = run(settings, [build_budget_status_asset(settings)], partition_key="2026-04-02")
    rows = rows_of(db_url, budget_status, "as_of_date", date(2026, 4, 2))
    assert any(r["entity_id"] == "ent-a" and r["monthly_budget"] == D(2000) for r in rows)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description


def test_history_is_stable_and_uses_the_budgets_of_its_month(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    engine = seed_ledger(ledger_url)
    day = "2026-03-05"
    run(settings, [build_budget_status_asset(settings)], partition_key=day)
    before = {
        r["entity_id"]: (r["credits_used"], r["monthly_budget"], r["forecast_month_end"])
        for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 3, 5))
    }
    assert before["ent-a"] == (D(150), D(1000), D(930))
    # later: April usage and April budgets arrive; re-materializing Mar 5 gives the same figures
    with engine.begin() as conn:
        conn.execute(
            usage_event.insert(),
            [event(date(2026, 4, 1), "ent-a", "500"), event(date(2026, 3, 20), "ent-a", "999")],
        )
    run(settings, [build_budget_status_asset(settings)], partition_key=day)
    after = {
        r["entity_id"]: (r["credits_used"], r["monthly_budget"], r["forecast_month_end"])
        for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 3, 5))
    }
    assert after == before
    # April 1 uses April's budget for a (2000) and March's, still in force, for b (200)
    run(settings, [build_budget_status_asset(settings)], partition_key="2026-04-01")
    april = {
        r["entity_id"]: r for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 4, 1))
    }
    assert april["ent-a"]["monthly_budget"] == D(2000) and april["ent-a"]["credits_used"] == D(500)
    assert april["ent-b"]["monthly_budget"] == D(200) and april["ent-b"]["credits_used"] == 0


def test_range_run_writes_every_day(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    run(
        settings,
        [build_budget_status_asset(settings)],
        tags={
            "dagster/asset_partition_range_start": "2026-03-01",
            "dagster/asset_partition_range_end": "2026-03-04",
        },
    )
    for i, used in enumerate(["30", "60", "90", "120"]):
        r = {
            x["entity_id"]: x
            for x in rows_of(db_url, budget_status, "as_of_date", MARCH + timedelta(days=i))
        }
        assert r["ent-b"]["credits_used"] == D(used)
        assert (r["ent-b"]["forecast_month_end"] is None) == (i < 2)  # from 3 days of data


def test_anomalies_against_the_trailing_baseline(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    result = run(settings, [build_usage_anomalies_asset(settings)], partition_key="2026-03-15")
    got = {
        (r["entity_id"], r["resource_type"]): r
        for r in rows_of(db_url, usage_anomaly, "usage_date", date(2026, 3, 15))
    }
    a = got[("ent-a", "app_compute")]
    # baseline Mar 1..14 = 30 a day; 90 today: +60 credits, +200 %
    assert (
        a["is_anomaly"]
        and a["impact_credits"] == D(60)
        and a["impact_pct"] == D(200)
        and a["baseline_days"] == 14
    )
    assert not got[("ent-b", "app_compute")]["is_anomaly"]
    ai = got[("ent-a", "ai")]  # 100 once in 14 days → baseline 7.142857; 0 today: below 10 credits
    assert not ai["is_anomaly"] and ai["direction"] == "drop"
    meta = result.asset_materializations_for_node("usage_anomalies")[0].metadata
    assert meta["anomalies"].value == 1 and meta["spikes"].value == 1


def test_provider_cap_from_provider_usage(db_url: str, ledger_url: str) -> None:
    settings = make_settings(
        db_url,
        ledger_url,
        phala={"enabled": False},
        neon={"enabled": False},
        forge={"enabled": True},
    )
    wh = Warehouse(db_url)
    app = settings.forge.apps[0].app_id if settings.forge.apps else "forge-app"
    days = [MARCH + timedelta(days=i) for i in range(3)]
    rows = [
        UsageRow(
            provider="forge",
            billing_account_id="dev",
            resource_id=app,
            metric="FUNCTION_COMPUTE",
            charge_period_start=datetime.combine(d, time(0), tzinfo=UTC),
            charge_period_end=datetime.combine(d + timedelta(days=1), time(0), tzinfo=UTC),
            usage_date=d,
            consumed_quantity=D(10000),
            consumed_unit="GB-seconds",
            raw_quantity=D(10000),
            raw_unit="GB-seconds",
            source_key=f"{app}:{d}",
        )
        for d in days
    ]
    cov = [
        DayCoverage(
            provider="forge",
            account_id=f"{app}|FUNCTION_COMPUTE",
            usage_date=d,
            status="complete",
            row_count=1,
        )
        for d in days
    ]
    store_fetch(wh, "forge", days, FetchResult(rows=rows, coverage=cov), settings, "l")
    result = run(settings, [build_provider_caps_asset(settings)], partition_key="2026-03-03")
    r = rows_of(db_url, provider_cap_status, "as_of_date", date(2026, 3, 3))[0]
    # 30,000 of 100,000 GB-s; 10,000 a day → 310,000 by month end (210,000 over); runs out end of Mar 10
    assert r["used_quantity"] == D(30000) and r["percent_used"] == D(30)
    assert r["forecast_month_end"] == D(310000) and r["forecast_overage"] == D(210000)
    assert r["projected_exhaustion_date"] == date(2026, 3, 10)
    assert (
        result.asset_materializations_for_node("provider_cap_status")[0]
        .metadata["forecast_over_cap"]
        .value
        == 1
    )


def test_range_across_a_month_boundary(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    run(
        settings,
        [build_budget_status_asset(settings)],
        tags={
            "dagster/asset_partition_range_start": "2026-03-31",
            "dagster/asset_partition_range_end": "2026-04-01",
        },
    )
    march = {
        r["entity_id"]: r for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 3, 31))
    }
    april = {
        r["entity_id"]: r for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 4, 1))
    }
    # March: a = 14 × 30 + 90 + 100 (AI) = 610 of 1000; forecast on the last day = used
    assert march["ent-a"]["credits_used"] == D(610) and march["ent-a"]["forecast_month_end"] == D(
        610
    )
    # April 1: nothing used yet in April; April's budget for a, March's still in force for b
    assert april["ent-a"]["credits_used"] == 0 and april["ent-a"]["monthly_budget"] == D(2000)
    assert april["ent-b"]["credits_used"] == 0 and april["ent-b"]["days_of_data"] == 0
    pools = {r["as_of_date"]: r for r in rows_of(db_url, credit_pool_status, "month", "2026-03")}
    assert pools[date(2026, 3, 31)]["used"] == D(1060)  # 610 + b's 15 × 30 = 450


def test_a_month_without_budgets_or_pool_is_not_configured(db_url: str, ledger_url: str) -> None:
    """February has usage but no budget and no credit pool (set from March on): its days are
    reported as not configured, March is computed, and the run succeeds."""
    settings = make_settings(db_url, ledger_url)
    engine = seed_ledger(ledger_url)
    with engine.begin() as conn:
        conn.execute(usage_event.insert(), [event(date(2026, 2, 27), "ent-a", "40")])
    result = run(
        settings,
        [build_budget_status_asset(settings)],
        tags={
            "dagster/asset_partition_range_start": "2026-02-27",
            "dagster/asset_partition_range_end": "2026-03-02",
        },
    )
    feb = rows_of(db_url, budget_status, "as_of_date", date(2026, 2, 28))
    assert [(r["entity_id"], r["budget_state"], r["credits_used"]) for r in feb] == [
        ("ent-a", "not_configured", D(40))
    ]
    assert feb[0]["monthly_budget"] is None and not feb[0]["over_budget"]
    march = {
        r["entity_id"]: r for r in rows_of(db_url, budget_status, "as_of_date", date(2026, 3, 2))
    }
    assert march["ent-a"]["budget_state"] == "configured"
    assert march["ent-a"]["monthly_budget"] == D(1000) and march["ent-a"]["credits_used"] == D(60)
    assert rows_of(db_url, credit_pool_status, "as_of_date", date(2026, 2, 28)) == []
    assert rows_of(db_url, credit_pool_status, "as_of_date", date(2026, 3, 2))[0]["used"] == D(120)

    meta = {
        m.partition: m.metadata for m in result.asset_materializations_for_node("budget_status")
    }
    assert meta["2026-02-28"]["budgets_status"].value == "not configured"
    assert meta["2026-02-28"]["pool_status"].value == "not configured"
    assert "pool_remaining" not in meta["2026-02-28"]  # no figure invented for February
    assert meta["2026-02-28"]["entities_not_configured"].value == 1
    assert meta["2026-03-02"]["pool_status"].value == "configured"
    assert meta["2026-03-02"]["pool_remaining"].value == 4880.0
    assert meta["2026-03-01"]["pool_remaining"].value == 4940.0  # each day its own pool
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and "not configured for 2026-02" in (check.description or "")

    # a month with neither usage nor budgets (before the ledger's history): no rows, still
    # reported as not configured, and green
    january = run(
        settings,
        [build_budget_status_asset(settings)],
        tags={
            "dagster/asset_partition_range_start": "2026-01-30",
            "dagster/asset_partition_range_end": "2026-01-31",
        },
    )
    assert rows_of(db_url, budget_status, "as_of_date", date(2026, 1, 31)) == []
    jan = {
        m.partition: m.metadata for m in january.asset_materializations_for_node("budget_status")
    }
    assert jan["2026-01-31"]["budgets_status"].value == "not configured"
    assert jan["2026-01-31"]["entities"].value == 0
    (check,) = january.get_asset_check_evaluations()
    assert check.passed and "not configured for 2026-01" in (check.description or "")


def test_budget_metadata_rounds_credits_for_people(db_url: str, ledger_url: str) -> None:
    settings = make_settings(db_url, ledger_url)
    engine = seed_ledger(ledger_url)
    with engine.begin() as conn:
        conn.execute(usage_event.insert(), [event(date(2026, 3, 2), "ent-b", "0.123456")])
    result = run(settings, [build_budget_status_asset(settings)], partition_key="2026-03-02")
    meta = result.asset_materializations_for_node("budget_status")[0].metadata
    # 60 + 60 (Mar 1-2) + 0.123456: people read 120.12, storage keeps every digit
    assert meta["credits_used_mtd"].value == 120.12
    stored = {
        r["entity_id"]: r
        for r in rows_of(db_url, budget_status, "as_of_date", MARCH.replace(day=2))
    }
    assert stored["ent-b"]["credits_used"] == D("60.123456")
    shown = {r.data["entity_id"]: r.data for r in meta["budgets"].records}
    assert shown["ent-b"]["credits_used"] == 60.12


def test_a_range_run_gives_each_day_its_own_anomaly_and_cap_figures(
    db_url: str, ledger_url: str
) -> None:
    """Over a range, every partition shows its day's anomalies and caps (not the range's), so
    the UI's plots over time are daily series."""
    settings = make_settings(db_url, ledger_url)
    seed_ledger(ledger_url)
    result = run(
        settings,
        [build_usage_anomalies_asset(settings)],
        tags={
            "dagster/asset_partition_range_start": "2026-03-13",
            "dagster/asset_partition_range_end": "2026-03-15",
        },
    )
    mats = {
        m.partition: m.metadata for m in result.asset_materializations_for_node("usage_anomalies")
    }
    assert sorted(mats) == ["2026-03-13", "2026-03-14", "2026-03-15"]
    for day, meta in mats.items():
        rows = rows_of(db_url, usage_anomaly, "usage_date", date.fromisoformat(day))
        assert meta["series_judged"].value == len(rows)
        assert meta["anomalies"].value == sum(1 for r in rows if r["is_anomaly"])
    assert mats["2026-03-15"]["anomalies"].value == 1  # the spike of ent-a (the test above)
    assert mats["2026-03-15"]["anomalies_in_run"].value >= 1
    # the worst table names the entity beside its id, from the ledger's budgets of the month
    names = {b.entity_id: b.name for b in SqlLedger(ledger_url).budgets("2026-03")}
    (worst,) = mats["2026-03-15"]["worst"].records
    assert worst.data["entity_id"] == "ent-a" and worst.data["entity_name"] == names["ent-a"]
    assert names["ent-a"]
