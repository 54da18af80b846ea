"""The warehouse: schema migration under concurrency, atomic day replacement."""

from __future__ import annotations

import multiprocessing
from datetime import date

import pytest
from sqlalchemy import func, select, table

from usage_orchestration.warehouse.schema import provider_coverage
from usage_orchestration.warehouse.store import Warehouse, normalize_url, safe_url


def _create(url: str) -> None:
    Warehouse(url).ensure_schema()


def test_concurrent_first_runs_both_create_the_schema(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create, args=(db_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    # the migrations ran once, under the lock: one version row, at head
    from usage_orchestration.warehouse.migrate import VERSION_TABLE, current_revision, head_revision

    wh = Warehouse(db_url)
    assert current_revision(wh.engine) == head_revision()
    with wh.engine.connect() as conn:
        versions = select(func.count()).select_from(table(VERSION_TABLE))
        assert conn.execute(versions).scalar() == 1


def _cov(day: date, account: str) -> dict:
    return {
        "provider": "phala",
        "account_id": account,
        "usage_date": day,
        "status": "complete",
        "reason": None,
        "row_count": 1,
        "load_id": "l",
        "fetched_at": __import__("datetime").datetime(2026, 1, 1),
    }


def test_replace_days_is_atomic_and_scoped(db_url: str) -> None:
    wh = Warehouse(db_url)
    d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
    wh.replace_days(
        provider_coverage, [d1, d2], [_cov(d1, "a"), _cov(d2, "a")], match={"provider": "phala"}
    )
    # a failing insert (duplicate primary key) must leave both days as they were
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        wh.replace_days(
            provider_coverage, [d1], [_cov(d1, "b"), _cov(d1, "b")], match={"provider": "phala"}
        )
    with wh.engine.connect() as conn:
        rows = conn.execute(
            select(provider_coverage.c.usage_date, provider_coverage.c.account_id)
        ).all()
    assert sorted(rows) == [(d1, "a"), (d2, "a")]
    # replacing d1 leaves d2 alone
    wh.replace_days(provider_coverage, [d1], [_cov(d1, "c")], match={"provider": "phala"})
    with wh.engine.connect() as conn:
        rows = conn.execute(
            select(provider_coverage.c.usage_date, provider_coverage.c.account_id)
        ).all()
        assert conn.execute(select(func.count()).select_from(provider_coverage)).scalar() == 2
    assert sorted(rows) == [(d1, "c"), (d2, "a")]


def test_rows_outside_the_replaced_days_are_refused(db_url: str) -> None:
    wh = Warehouse(db_url)
    with pytest.raises(ValueError, match="outside the replaced days"):
        wh.replace_days(provider_coverage, [date(2026, 11, 1)], [_cov(date(2026, 11, 2), "a")])


def test_a_row_missing_a_field_is_refused_and_nothing_is_written(db_url: str) -> None:
    wh = Warehouse(db_url)
    d1 = date(2026, 11, 1)
    wh.replace_days(provider_coverage, [d1], [_cov(d1, "a")], match={"provider": "phala"})
    lacking = {k: v for k, v in _cov(d1, "c").items() if k != "row_count"}
    with pytest.raises(ValueError, match="provider_coverage: a row lacks the field 'row_count'"):
        wh.replace_days(
            provider_coverage, [d1], [_cov(d1, "b"), lacking], match={"provider": "phala"}
        )
    with wh.engine.connect() as conn:
        rows = conn.execute(select(provider_coverage.c.account_id)).scalars().all()
    assert rows == ["a"]


def test_urls_pin_the_driver_and_hide_passwords() -> None:
    assert normalize_url("postgresql://u:pw@h/db").startswith("postgresql+psycopg://")
    assert normalize_url("postgresql+psycopg2://u@h/db").startswith("postgresql+psycopg2://")
    assert "pw" not in safe_url("postgresql://u:pw@h/db")


def test_bulk_replace_round_trips_exact_values(db_url: str) -> None:
    """Hundreds of rows (COPY on PostgreSQL, INSERT elsewhere) come back exactly as written."""
    from decimal import Decimal

    from usage_orchestration.warehouse.schema import ledger_daily_usage

    wh = Warehouse(db_url)
    day = date(2024, 2, 29)
    rows = [
        {
            "usage_date": day,
            "entity_id": f"entity-{i:04d}",
            "entity_type": "app",
            "resource_type": "app_compute" if i % 2 else 'it\'s \t|tab\\ "quoted"',
            "unit": "second",
            "quantity": None if i % 7 == 0 else Decimal(i) / Decimal(8),
            "credits": Decimal("0.000001") * i,
            "events": i,
            "load_id": "bulk",
        }
        for i in range(450)
    ]
    assert wh.replace_days(ledger_daily_usage, [day], rows) == 450
    with wh.engine.connect() as conn:
        back = (
            conn.execute(select(ledger_daily_usage).order_by(ledger_daily_usage.c.entity_id))
            .mappings()
            .all()
        )
    assert [dict(r) for r in back] == rows
