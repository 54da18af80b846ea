"""A range run gives every partition its own day's figures (issue 13, item 4).

Three days of ledger_daily_usage, usage_reconciliation, budget_status and focus_costs as ONE
run (a single-run backfill); each partition's latest materialization is read back from the
instance, as the UI's plots over time read it: one materialization per day, no range-wide one,
and each day's numbers are that day's warehouse figures (so the series are not flat)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, materialize
from sqlalchemy import func, select

from usage_orchestration.core.money import display_credits
from usage_orchestration.defs.budgets import build_budget_status_asset
from usage_orchestration.defs.focus import build_focus_asset
from usage_orchestration.defs.ledger import LedgerResource, build_ledger_asset
from usage_orchestration.defs.reconcile import build_reconciliation_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.ledger.schema import usage_event
from usage_orchestration.providers.records import DayCoverage, FetchResult
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    credit_pool_status,
    usage_reconciliation,
)
from usage_orchestration.warehouse.focus import focus_cost_row
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import ledger_daily_usage
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration.warehouse.types import exact_sum
from usage_orchestration_tests.test_budgets_assets import event, seed_ledger
from usage_orchestration_tests.test_reconcile_assets import APP_A, APP_B, usage

DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(3)]
KEYS = ["ledger_daily_usage", "usage_reconciliation", "budget_status", "focus_costs"]


def _settings(db_url: str, ledger_url: str, tmp_path: Path) -> UsageSettings:
    def mapping(app: str, eid: str) -> dict[str, str]:
        return {
            "provider": "phala",
            "resource_id": app,
            "metric": "compute",
            "entity_id": eid,
            "entity_type": "app",
            "resource_type": "app_compute",
        }

    return load_settings(
        warehouse_url=db_url,
        ledger={"database_url": ledger_url},
        state_dir=str(tmp_path / "state"),
        phala={"app_ids": [APP_A, APP_B]},
        neon={"enabled": False},
        forge={"enabled": False},
        mappings=[mapping(APP_A, "ent-a"), mapping(APP_B, "ent-b")],
        rate_card={
            "app_compute": {
                "ledger_unit": "second",
                "conversions": {"minute": {"multiply": 60}},
                "credits_per_unit": "0.01",
                "tolerance_abs": 60,
                "tolerance_rel": "0.02",
            }
        },
    )


def _seed(settings: UsageSettings, ledger_url: str) -> None:
    engine = seed_ledger(ledger_url)  # ent-a and ent-b 30 credits a day each, budgets, pool
    with engine.begin() as conn:  # days that differ
        conn.execute(
            usage_event.insert(),
            [event(DAYS[1], "ent-a", "7"), event(DAYS[2], "ent-b", "11.255")],
        )
    # provider side: ent-a matches on day 1, is under on day 2, ent-b drifts on day 3
    minutes = {DAYS[0]: (50, 50), DAYS[1]: (50, 50), DAYS[2]: (50, 90)}
    rows = [
        usage(d, app, "compute", m)
        for d, ms in minutes.items()
        for app, m in zip((APP_A, APP_B), ms, strict=True)
    ]
    cov = [
        DayCoverage(provider="phala", account_id=a, usage_date=d, status="complete", row_count=1)
        for d in DAYS
        for a in (APP_A, APP_B)
    ]
    wh = Warehouse(settings.warehouse_url)
    wh.ensure_schema()
    store_fetch(wh, "phala", DAYS, FetchResult(rows=rows, coverage=cov), settings, "load-1")


def _latest(instance: DagsterInstance, key: str) -> dict[str, dict[str, Any]]:
    """Per partition: the metadata of its one materialization (asserting there is one)."""
    records = instance.fetch_materializations(AssetKey(key), limit=100).records
    by_day: dict[str, list[Any]] = {}
    for r in records:
        by_day.setdefault(r.partition_key, []).append(r.asset_materialization.metadata)
    assert sorted(by_day) == [d.isoformat() for d in DAYS], key  # no unpartitioned one
    assert all(len(v) == 1 for v in by_day.values()), key  # no duplicate overriding a day
    return {p: {k: v.value for k, v in m[0].items()} for p, m in by_day.items()}


def _per_day(wh: Warehouse, stmt: Any) -> dict[str, Any]:
    with wh.engine.connect() as conn:
        return {d.isoformat(): v for d, v in conn.execute(stmt)}


def _shown(value: Any) -> float:
    return float(display_credits(D(value or 0)))


def test_every_partition_of_a_range_run_shows_its_own_day(
    db_url: str, ledger_url: str, tmp_path: Path
) -> None:
    settings = _settings(db_url, ledger_url, tmp_path)
    _seed(settings, ledger_url)
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [
            build_ledger_asset(settings),
            build_reconciliation_asset(settings),
            build_budget_status_asset(settings),
            build_focus_asset(settings),
        ],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=db_url),
            "ledger": LedgerResource(database_url=ledger_url),
        },
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
        },
    )
    assert result.success
    meta = {k: _latest(instance, k) for k in KEYS}
    wh = Warehouse(db_url)

    led = ledger_daily_usage
    ledger_credits = _per_day(
        wh, select(led.c.usage_date, exact_sum(led.c.credits)).group_by(led.c.usage_date)
    )
    rec = usage_reconciliation
    breaks = _per_day(
        wh,
        select(rec.c.usage_date, func.count())
        .where(rec.c.within_tolerance.is_(False))
        .group_by(rec.c.usage_date),
    )
    bs = budget_status
    used_mtd = _per_day(
        wh, select(bs.c.as_of_date, exact_sum(bs.c.credits_used)).group_by(bs.c.as_of_date)
    )
    pool = _per_day(wh, select(credit_pool_status.c.as_of_date, credit_pool_status.c.remaining))
    f = focus_cost_row
    focus_rows = _per_day(wh, select(f.c.usage_date, func.count()).group_by(f.c.usage_date))

    for d in (d.isoformat() for d in DAYS):
        assert meta["ledger_daily_usage"][d]["credits_total"] == _shown(ledger_credits[d])
        assert meta["usage_reconciliation"][d]["breaks"] == breaks.get(d, 0)
        assert meta["budget_status"][d]["credits_used_mtd"] == _shown(used_mtd[d])
        assert meta["budget_status"][d]["pool_remaining"] == _shown(pool[d])
        assert meta["budget_status"][d]["as_of"] == d
        assert meta["focus_costs"][d]["rows"] == focus_rows[d]

    def series(key: str, field: str) -> list[Any]:
        return [meta[key][d.isoformat()][field] for d in DAYS]

    # real series over time: the days differ (a range's totals on every day would be flat)
    assert series("ledger_daily_usage", "credits_total") == [60.0, 67.0, 71.26]
    assert series("usage_reconciliation", "breaks") == [0, 1, 1]
    assert series("budget_status", "pool_remaining") == [4940.0, 4873.0, 4801.75]
    assert len(set(series("budget_status", "credits_used_mtd"))) == 3

    # tables show the ledger's entity names beside the ids
    worst = meta["usage_reconciliation"]["2026-03-02"]["worst_breaks"].records
    assert [(r.data["entity_name"], r.data["entity_id"]) for r in worst] == [("Sales", "ent-a")]
    budgets = meta["budget_status"]["2026-03-02"]["budgets"].records
    assert {(r.data["entity_name"], r.data["entity_id"]) for r in budgets} == {
        ("Sales", "ent-a"),
        ("Bot", "ent-b"),
    }


def test_every_warehouse_asset_documents_its_table_columns() -> None:
    """The catalog shows each warehouse asset's columns (``dagster/column_schema``), read from
    the SQLAlchemy table the asset writes, so they are declared in one place."""
    from usage_orchestration.defs.location import build_definitions
    from usage_orchestration.warehouse.analysis_schema import provider_cap_status, usage_anomaly
    from usage_orchestration.warehouse.schema import provider_usage

    tables = {
        "ledger_daily_usage": ledger_daily_usage,
        "usage_reconciliation": usage_reconciliation,
        "budget_status": budget_status,
        "usage_anomalies": usage_anomaly,
        "provider_cap_status": provider_cap_status,
        "focus_costs": focus_cost_row,
        "phala_usage": provider_usage,
        "neon_usage": provider_usage,
        "forge_usage": provider_usage,
    }
    graph = build_definitions(load_settings()).resolve_asset_graph()
    for key, table in tables.items():
        meta = graph.get(AssetKey(key)).metadata
        schema = meta["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [c.name for c in table.columns], key
        assert meta["dagster/table_name"] == table.name
    schema = graph.get(AssetKey("budget_status")).metadata["dagster/column_schema"]
    cols = {c.name: c for c in schema.columns}
    assert cols["credits_used"].type == "decimal(38,12)"
    assert cols["credits_used"].constraints.nullable is False
    assert cols["monthly_budget"].constraints.nullable is True
    assert cols["as_of_date"].type == "date" and cols["over_budget"].type == "bool"
    assert schema.constraints.other == ["primary key (as_of_date, entity_id)"]
