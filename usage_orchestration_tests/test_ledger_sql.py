"""The SQL ledger reader on SQLite and PostgreSQL: UTC day boundaries, exact Decimal sums, budgets
and pool as of a day, sync status, registry, and clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from usage_orchestration.ledger.schema import (
    RESOURCE_TYPES,
    credit_pool,
    entity,
    entity_budget,
    ledger_metadata,
    license_sync,
    resource_type,
    usage_event,
)
from usage_orchestration.ledger.sql import LedgerError, SqlLedger
from usage_orchestration.warehouse.store import make_engine

APP = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
WS = "cccccccc-cccc-cccc-cccc-cccccccccccc"
D = date(2026, 5, 14)


def _at(day: date, h: int = 0, m: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, s, us, tzinfo=UTC)


def _ev(
    when: datetime,
    eid: str,
    rt: str,
    qty: str | None,
    unit: str | None,
    credits: str,
    etype: str = "app",
) -> dict[str, Any]:
    return {
        "occurred_at": when,
        "actor": "jdoe",
        "actor_type": "user",
        "entity_id": eid,
        "entity_type": etype,
        "resource_type": rt,
        "quantity": None if qty is None else Decimal(qty),
        "unit": unit,
        "credits": Decimal(credits),
        "metadata": "{}",
    }


@pytest.fixture
def ledger(ledger_url: str) -> SqlLedger:
    engine = make_engine(ledger_url)
    ledger_metadata.create_all(engine)
    prev, nxt = D - timedelta(days=1), D + timedelta(days=1)
    events = [
        # the last microsecond of the previous day, and the first instant of the next: not D
        _ev(_at(prev, 23, 59, 59, 999_999), APP, "app_compute", "100", "second", "1.00"),
        _ev(_at(nxt), APP, "app_compute", "200", "second", "2.00"),
        # D, from its first instant
        _ev(_at(D), APP, "app_compute", "10.5", "second", "0.105"),
        _ev(_at(D, 12, 30), APP, "app_compute", "0.1", "second", "0.001"),
        _ev(_at(D, 23, 59, 59), APP, "app_compute", "0.2", "second", "0.002"),
        _ev(_at(D, 8), APP, "ai", None, None, "12.345678", "app"),
        _ev(_at(D, 9), WS, "workspace_storage", "1073741824", "byte", "0.333333", "workspace"),
        _ev(_at(D, 10), WS, "workspace_storage", "1073741824", "byte", "0.333334", "workspace"),
        # later in the month: counts for the pool only as of later days
        _ev(_at(date(2026, 5, 20), 6), WS, "job_compute", "60", "second", "1000", "workspace"),
        # the previous month
        _ev(_at(date(2026, 4, 30), 6), APP, "app_compute", "60", "second", "500"),
    ]
    with engine.begin() as conn:
        conn.execute(insert(resource_type), RESOURCE_TYPES)
        conn.execute(
            insert(entity),
            [
                {
                    "id": APP,
                    "entity_type": "app",
                    "name": "Sales Dashboard",
                    "slug": "sales-dashboard",
                    "owner_id": "jdoe",
                },
                {
                    "id": WS,
                    "entity_type": "workspace",
                    "name": "Analytics Warehouse",
                    "slug": "aw",
                    "owner_id": None,
                },
            ],
        )
        conn.execute(insert(usage_event), events)
        conn.execute(
            insert(entity_budget),
            [
                {"entity_id": APP, "month": "2026-03", "monthly_budget": Decimal(1000)},
                {"entity_id": APP, "month": "2026-05", "monthly_budget": Decimal("1500.5")},
                {"entity_id": WS, "month": "2026-04", "monthly_budget": Decimal(300)},
            ],
        )
        conn.execute(
            insert(credit_pool),
            [
                {"month": "2026-04", "included": Decimal(5000)},
                {"month": "2026-05", "included": Decimal(6000)},
            ],
        )
        conn.execute(
            insert(license_sync),
            [
                {
                    "synced_at": _at(D, 1),
                    "last_sync_failed_at": None,
                    "last_sync_failure_code": None,
                    "staleness_level": None,
                },
                {
                    "synced_at": _at(D, 1),
                    "last_sync_failed_at": _at(D, 2),
                    "last_sync_failure_code": "lm_unreachable",
                    "staleness_level": "warning",
                },
            ],
        )
    engine.dispose()
    reader = SqlLedger(ledger_url)
    yield reader
    reader.close()


def test_daily_usage_is_the_half_open_utc_day_with_exact_sums(ledger: SqlLedger) -> None:
    rows = {(u.entity_id, u.resource_type, u.unit): u for u in ledger.daily_usage(D)}
    assert set(rows) == {
        (APP, "app_compute", "second"),
        (APP, "ai", None),
        (WS, "workspace_storage", "byte"),
    }
    compute = rows[(APP, "app_compute", "second")]
    # 00:00:00 of D counts; 23:59:59.999999 of D-1 and 00:00 of D+1 do not
    assert compute.events == 3
    assert compute.quantity == Decimal("10.8")
    assert compute.credits == Decimal("0.108")
    ai = rows[(APP, "ai", None)]
    assert ai.quantity is None and ai.credits == Decimal("12.345678") and ai.events == 1
    storage = rows[(WS, "workspace_storage", "byte")]
    assert storage.entity_type == "workspace"
    assert storage.quantity == Decimal(2 * 1073741824)
    assert storage.credits == Decimal("0.666667")
    assert all(u.usage_date == D for u in rows.values())
    assert ledger.daily_usage(D + timedelta(days=1))[0].credits == Decimal("2.00")
    assert ledger.daily_usage(date(2026, 5, 1)) == []


def test_credits_by_day_groups_per_utc_day(ledger: SqlLedger) -> None:
    got = ledger.credits_by_day(D - timedelta(days=1), D + timedelta(days=1))
    assert got == [
        (D - timedelta(days=1), APP, "app", "app_compute", Decimal("1.000000")),
        (D, APP, "app", "ai", Decimal("12.345678")),
        (D, APP, "app", "app_compute", Decimal("0.108000")),
        (D, WS, "workspace", "workspace_storage", Decimal("0.666667")),
        (D + timedelta(days=1), APP, "app", "app_compute", Decimal("2.000000")),
    ]
    with pytest.raises(ValueError, match="reversed"):
        ledger.credits_by_day(D, D - timedelta(days=1))


def test_budgets_are_those_in_force_that_month(ledger: SqlLedger) -> None:
    def as_dict(month: str) -> dict[str, Decimal]:
        return {b.entity_id: b.monthly_budget for b in ledger.budgets(month)}

    assert as_dict("2026-02") == {}
    assert as_dict("2026-03") == {APP: Decimal(1000)}
    assert as_dict("2026-04") == {APP: Decimal(1000), WS: Decimal(300)}  # carried forward
    assert as_dict("2026-05") == {APP: Decimal("1500.5"), WS: Decimal(300)}
    may = {b.entity_id: b for b in ledger.budgets("2026-05")}
    assert may[APP].name == "Sales Dashboard" and may[WS].entity_type == "workspace"
    with pytest.raises(ValueError, match="YYYY-MM"):
        ledger.budgets("2026-5")


def test_credit_pool_counts_only_the_month_through_as_of(ledger: SqlLedger) -> None:
    pool = ledger.credit_pool(D)
    # May 1..14: 1.00 (May 13) + 12.345678 + 0.108 + 0.666667; April's 500, May 15's 2.00
    # and May 20's 1000 are excluded
    assert pool.included == Decimal(6000)
    assert pool.used == Decimal("14.120345")
    assert pool.remaining == Decimal(6000) - Decimal("14.120345")
    assert ledger.credit_pool(date(2026, 5, 31)).used == Decimal("1016.120345")
    april = ledger.credit_pool(date(2026, 4, 30))
    assert (april.included, april.used) == (Decimal(5000), Decimal(500))
    with pytest.raises(LedgerError, match="no included credits for 2026-03"):
        ledger.credit_pool(date(2026, 3, 31))


def test_sync_status_is_the_latest_row_and_registry_is_the_spec(ledger: SqlLedger) -> None:
    s = ledger.sync_status()
    assert s.last_sync_failure_code == "lm_unreachable"
    assert s.last_sync_failed_at == _at(D, 2)
    assert s.synced_at == _at(D, 1) and s.synced_at.tzinfo is not None
    assert s.staleness_level == "warning"
    slugs = {r.slug: r for r in ledger.resource_types()}
    assert set(slugs) == {
        "ai",
        "agent_run",
        "app_compute",
        "job_compute",
        "app_storage",
        "workspace_storage",
        "file_storage",
        "es_index_count",
    }
    assert (slugs["workspace_storage"].mode, slugs["workspace_storage"].unit) == ("gauge", "byte")


def test_missing_schema_is_a_clear_error_without_password(ledger_url: str) -> None:
    reader = SqlLedger(ledger_url)
    with pytest.raises(LedgerError) as err:
        reader.daily_usage(D)
    assert "cannot read usage of 2026-05-14" in str(err.value)
    assert "ledger (sql" in str(err.value)


def test_password_is_masked_in_descriptions() -> None:
    reader = SqlLedger("postgresql://reader:s3cret-pw@db.invalid:5432/ledger")
    assert "s3cret-pw" not in repr(reader) and "s3cret-pw" not in reader.describe()
