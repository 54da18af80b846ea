"""``usage_reconciliation`` through Dagster on a real warehouse (SQLite, and PostgreSQL when
USAGE_TEST_POSTGRES_URL is set): a range run handles every day, replaces them idempotently, and
its checks fail, warn and block as promised."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from dagster import AssetKey, BackfillPolicy, DagsterInstance, asset, materialize
from sqlalchemy import func, select

from usage_orchestration.defs.ledger import LedgerResource
from usage_orchestration.defs.partitions import daily_partitions
from usage_orchestration.defs.reconcile import build_reconciliation_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.analysis_schema import usage_reconciliation
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import ledger_daily_usage
from usage_orchestration.warehouse.store import Warehouse

APP_A = "a" * 40
APP_B = "b" * 40
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
RANGE = {
    "dagster/asset_partition_range_start": "2026-03-01",
    "dagster/asset_partition_range_end": "2026-03-02",
}


def make_settings(db_url: str, *, block: bool = False) -> UsageSettings:
    return load_settings(
        warehouse_url=db_url,
        phala={"app_ids": [APP_A, APP_B]},
        neon={"enabled": False},
        forge={"enabled": False},
        mappings=[
            {
                "provider": "phala",
                "resource_id": APP_A,
                "metric": "compute",
                "entity_id": "ent-a",
                "entity_type": "app",
                "resource_type": "app_compute",
            },
            {
                "provider": "phala",
                "resource_id": APP_B,
                "metric": "compute",
                "entity_id": "ent-b",
                "entity_type": "app",
                "resource_type": "app_compute",
            },
        ],
        rate_card={
            "app_compute": {
                "ledger_unit": "second",
                "conversions": {"minute": {"multiply": 60}},
                "credits_per_unit": "0.01",
                "tolerance_abs": 60,
                "tolerance_rel": "0.02",
                "block_downstream": block,
            }
        },
    )


def usage(day: date, app: str, metric: str, minutes: int) -> UsageRow:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return UsageRow(
        provider="phala",
        billing_account_id="team",
        resource_id=app,
        metric=metric,
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        usage_date=day,
        consumed_quantity=D(minutes),
        consumed_unit="minute",
        raw_quantity=D(minutes),
        raw_unit="minute",
        source_key=f"{app}:{metric}:{day}",
    )


def seed(settings: UsageSettings, *, missing_b_coverage_on_d2: bool = False) -> Warehouse:
    wh = Warehouse(settings.warehouse_url)
    wh.ensure_schema()
    rows = [usage(d, app, "compute", 100) for d in (D1, D2) for app in (APP_A, APP_B)]
    rows.append(usage(D2, APP_A, "storage", 7))  # unmapped
    cov = [
        DayCoverage(provider="phala", account_id=app, usage_date=d, status="complete", row_count=1)
        for d in (D1, D2)
        for app in (APP_A, APP_B)
        if not (missing_b_coverage_on_d2 and d == D2 and app == APP_B)
    ]
    store_fetch(wh, "phala", [D1, D2], FetchResult(rows=rows, coverage=cov), settings, "load-1")

    def led(d: date, eid: str, seconds: int) -> dict[str, Any]:
        return {
            "usage_date": d,
            "entity_id": eid,
            "entity_type": "app",
            "resource_type": "app_compute",
            "unit": "second",
            "quantity": D(seconds),
            "credits": D(seconds) / 100,
            "events": 3,
            "load_id": "l",
        }

    # D1: both match; D2: ent-a 30 % under (4200 of 6000 s), ent-b matched
    wh.replace_days(
        ledger_daily_usage,
        [D1, D2],
        [
            led(D1, "ent-a", 6000),
            led(D1, "ent-b", 6010),
            led(D2, "ent-a", 4200),
            led(D2, "ent-b", 6000),
        ],
    )
    return wh


def run(settings: UsageSettings, extra: list | None = None, **kw: Any):
    return materialize(
        [build_reconciliation_asset(settings), *(extra or [])],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            # no ledger database here: the tables show entity ids without names
            "ledger": LedgerResource(database_url=settings.ledger.database_url),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kw,
    )


def table(wh: Warehouse) -> list[dict[str, Any]]:
    with wh.engine.connect() as conn:
        t = usage_reconciliation
        return [
            dict(r._mapping)
            for r in conn.execute(select(t).order_by(t.c.usage_date, t.c.entity_id))
        ]


def checks(result) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_range_run_reconciles_every_day_and_reports(db_url: str) -> None:
    settings = make_settings(db_url)
    wh = seed(settings)
    result = run(settings, tags=RANGE)
    assert result.success
    rows = table(wh)
    got = {(r["usage_date"], r["entity_id"], r["resource_type"]): r for r in rows}
    assert got[(D1, "ent-a", "app_compute")]["status"] == "matched"
    assert got[(D1, "ent-b", "app_compute")]["status"] == "matched"
    under = got[(D2, "ent-a", "app_compute")]
    assert under["status"] == "ledger_under" and not under["within_tolerance"]
    assert (
        under["expected_credits"] == D(60)
        and under["recorded_credits"] == D(42)
        and under["delta_credits"] == D(-18)
    )
    assert got[(D2, "", "storage")]["status"] == "unmapped"
    assert len(rows) == 5

    # each partition its own day's figures: D1 all matched, D2 the break and the unmapped row
    mats = result.asset_materializations_for_node("usage_reconciliation")
    meta = {m.partition: m.metadata for m in mats}
    assert len(mats) == 2 and set(meta) == {"2026-03-01", "2026-03-02"}
    d1, d2 = meta["2026-03-01"], meta["2026-03-02"]
    assert (d1["breaks"].value, d1["count_matched"].value, d1["count_unmapped"].value) == (0, 2, 0)
    assert (d2["breaks"].value, d2["count_matched"].value, d2["count_unmapped"].value) == (1, 1, 1)
    assert d1["leak_credits"].value == 0.0 and d2["leak_credits"].value == 18.0
    assert d2["overcharge_credits"].value == 0.0
    assert "ent-a" in [r.data["entity_id"] for r in d2["worst_breaks"].records]
    assert d1["worst_breaks"].records == []

    c = checks(result)
    assert not c["within_tolerance"].passed and c["within_tolerance"].severity.value == "ERROR"
    assert c["no_blocking_breaks"].passed  # app_compute is not marked block_downstream
    assert c["completeness"].passed
    assert not c["unmapped_usage"].passed and c["unmapped_usage"].severity.value == "WARN"

    # re-materializing replaces the days: same rows, nothing duplicated
    assert run(settings, tags=RANGE).success
    again = table(wh)
    assert len(again) == 5
    assert [(r["usage_date"], r["entity_id"], r["status"]) for r in again] == [
        (r["usage_date"], r["entity_id"], r["status"]) for r in rows
    ]


def test_a_ledger_day_without_any_event_is_unavailable_not_leaks(db_url: str) -> None:
    settings = make_settings(db_url)
    wh = seed(settings)
    # the ledger lost D2 entirely: no row for any entity (a ledger or sync problem)
    with wh.engine.begin() as conn:
        conn.execute(ledger_daily_usage.delete().where(ledger_daily_usage.c.usage_date == D2))
    result = run(settings, tags=RANGE)
    assert result.success
    d2 = [r for r in table(wh) if r["usage_date"] == D2 and r["entity_id"]]
    assert {r["status"] for r in d2} == {"ledger_unavailable"}
    assert all(r["within_tolerance"] and r["delta_credits"] is None for r in d2)
    assert "no events at all" in d2[0]["reason"]
    meta = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("usage_reconciliation")
    }
    assert meta["2026-03-02"]["ledger_coverage"].value == "unavailable"
    assert meta["2026-03-02"]["count_missing_in_ledger"].value == 0
    assert meta["2026-03-02"]["leak_credits"].value == 0.0
    assert meta["2026-03-01"]["ledger_coverage"].value == "complete"
    assert checks(result)["within_tolerance"].passed  # no wall of breaks


def test_completeness_names_the_missing_account(db_url: str) -> None:
    settings = make_settings(db_url)
    wh = seed(settings, missing_b_coverage_on_d2=True)
    result = run(settings, partition_key="2026-03-02")
    c = checks(result)["completeness"]
    assert not c.passed
    assert (
        c.metadata["accounts_missing"].value == 1
        and APP_B in c.metadata["missing"].records[0].data["accounts"]
    )
    # without coverage, ent-b on D2 is provider_unavailable, not a break
    b = [r for r in table(wh) if r["entity_id"] == "ent-b"]
    assert [r["status"] for r in b] == ["provider_unavailable"]


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[AssetKey("usage_reconciliation")],
)
def downstream_of_reconciliation() -> None:
    return None


def test_a_blocking_break_stops_downstream_assets(db_url: str) -> None:
    blocking = make_settings(db_url, block=True)
    seed(blocking)
    result = run(blocking, extra=[downstream_of_reconciliation], partition_key="2026-03-02")
    assert not checks(result)["no_blocking_breaks"].passed
    assert not result.asset_materializations_for_node("downstream_of_reconciliation")

    relaxed = make_settings(db_url, block=False)
    result = run(relaxed, extra=[downstream_of_reconciliation], partition_key="2026-03-02")
    assert checks(result)["no_blocking_breaks"].passed
    assert result.asset_materializations_for_node("downstream_of_reconciliation")


def test_reconciliation_aggregates_in_sql(db_url: str) -> None:
    """The provider side is read as one grouped row per resource/metric/unit, not per raw row."""
    from usage_orchestration.warehouse.analysis import provider_aggregates

    settings = make_settings(db_url)
    wh = seed(settings)
    aggs = provider_aggregates(wh, [D1, D2], ["phala"])
    assert sorted((a.resource_id[:1], a.metric, a.quantity) for a in aggs[D2]) == [
        ("a", "compute", D(100)),
        ("a", "storage", D(7)),
        ("b", "compute", D(100)),
    ]
    with wh.engine.connect() as conn:
        from usage_orchestration.warehouse.schema import provider_usage

        assert conn.execute(select(func.count()).select_from(provider_usage)).scalar() == 5


def test_credits_only_ledger_rows_compare_credits(db_url: str) -> None:
    """Rows from the HTTP ledger carry no unit (stored as ""): credits are compared instead."""
    from usage_orchestration.warehouse.analysis import ledger_aggregates

    settings = make_settings(db_url)
    wh = seed(settings)
    wh.replace_days(
        ledger_daily_usage,
        [D1],
        [
            {
                "usage_date": D1,
                "entity_id": "ent-a",
                "entity_type": "app",
                "resource_type": "app_compute",
                "unit": "",
                "quantity": D(0),
                "credits": D("59.5"),
                "events": 3,
                "load_id": "http",
            },
            {
                "usage_date": D1,
                "entity_id": "ent-b",
                "entity_type": "app",
                "resource_type": "app_compute",
                "unit": "",
                "quantity": D(0),
                "credits": D(40),
                "events": 3,
                "load_id": "http",
            },
        ],
    )
    assert {u.quantity for u in ledger_aggregates(wh, [D1])[D1]} == {None}
    assert run(settings, partition_key="2026-03-01").success
    got = {r["entity_id"]: r for r in table(wh) if r["usage_date"] == D1}
    # expected 60 credits each; tolerance max(60 s × 0.01 = 0.6, 2 % × 60 = 1.2) credits
    assert got["ent-a"]["status"] == "matched" and got["ent-a"]["compared_on"] == "credits"
    assert got["ent-b"]["status"] == "ledger_under" and got["ent-b"]["delta_credits"] == D(-20)
    assert got["ent-b"]["delta_quantity"] is None


def test_dependencies_follow_the_enabled_providers(db_url: str) -> None:
    settings = make_settings(db_url)
    deps = {
        k.to_user_string()
        for k in build_reconciliation_asset(settings).asset_deps[AssetKey("usage_reconciliation")]
    }
    assert deps == {"ledger_daily_usage", "phala_usage"}
    both = settings.model_copy(update={"neon": settings.neon.model_copy(update={"enabled": True})})
    deps = {
        k.to_user_string()
        for k in build_reconciliation_asset(both).asset_deps[AssetKey("usage_reconciliation")]
    }
    assert deps == {"ledger_daily_usage", "phala_usage", "neon_usage"}
