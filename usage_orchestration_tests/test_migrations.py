"""The warehouse's Alembic revisions: a baseline warehouse with alerts, deliveries, silences
and usage upgrades to head keeping all of it; a warehouse from before migrations is adopted;
``db upgrade`` is idempotent; the revisions build exactly the tables the code defines."""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Numeric, Table, column, func, inspect, select, table

from usage_orchestration.alerts.outbox import alert_delivery, alert_outbox, alert_silence
from usage_orchestration.cli import main
from usage_orchestration.core.money import CONTEXT
from usage_orchestration.warehouse import migrate
from usage_orchestration.warehouse.schema import ledger_daily_usage, provider_usage
from usage_orchestration.warehouse.store import Warehouse, make_engine
from usage_orchestration.warehouse.types import ExactDecimal, exact_sum

D = Decimal
DAY = date(2026, 3, 1)
WHEN = datetime(2026, 3, 1, 9, 30)
# what a NUMERIC(38, 12) column of the baseline holds exactly on both backends (SQLite's float
# keeps 15 significant digits); the 38-digit value only survives the baseline on PostgreSQL
SAFE = [D("1234.5678"), D("0.000001"), D("-42.125"), D("100")]
WIDE = D("99999999999999999999999999.999999999999")


def _baseline_table(table: Table) -> Table:
    """``table`` as the baseline wrote it: NUMERIC(38, 12) where the code now has ExactDecimal."""
    cols = [
        Column(c.name, Numeric(38, 12) if isinstance(c.type, ExactDecimal) else c.type)
        for c in table.columns
    ]
    return Table(table.name, MetaData(), *cols)


def _usage(i: int, qty: Decimal) -> dict[str, Any]:
    return {
        "provider": "neon", "usage_date": DAY, "source_key": f"rec-{i}",
        "billing_account_id": "org-1", "resource_id": "proj-1", "resource_name": None,
        "sub_account_id": None, "metric": "compute_seconds", "charge_period_start": WHEN,
        "charge_period_end": WHEN, "consumed_quantity": qty, "consumed_unit": "second",
        "raw_quantity": qty, "raw_unit": "second", "billed_cost": None, "billing_currency": None,
        "list_cost": qty, "details": None, "entity_id": "ent-1", "entity_type": "app",
        "resource_type": "compute", "load_id": "old", "fetched_at": WHEN,
    }  # fmt: skip


def _alert_rows() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    outbox = {
        "dedup_key": "usage-orchestration/budget_threshold/entity/bot/2026-03/80pct",
        "kind": "budget_threshold", "severity": "warning", "subject": "entity/bot",
        "period": "2026-03", "threshold": "80pct", "summary": "bot used 80 %",
        "details": '{"credits_used": "80.5"}', "links": "[]", "channel": "slack",
        "state": "open", "trigger_status": "delivered", "resolve_status": None,
        "suppressed_reason": None, "attempts": 1, "next_attempt_at": None, "lease_until": None,
        "last_error": None, "first_seen_at": WHEN, "last_seen_at": WHEN, "resolved_at": None,
        "updated_at": WHEN,
    }  # fmt: skip
    delivery = {
        "id": 1, "dedup_key": outbox["dedup_key"], "action": "trigger", "channel": "slack",
        "attempted_at": WHEN, "outcome": "delivered", "http_status": 200, "reason": None,
    }  # fmt: skip
    silence = {
        "id": 1, "kind": "reconciliation_break", "subject": "provider/neon*",
        "starts_at": WHEN, "ends_at": datetime(2026, 3, 8), "reason": "Neon migration",
        "created_at": WHEN,
    }  # fmt: skip
    return outbox, delivery, silence


def _write_baseline_data(engine: Any, wide: bool) -> list[Decimal]:
    values = SAFE + ([WIDE] if wide else [])
    outbox, delivery, silence = _alert_rows()
    with engine.begin() as conn:
        conn.execute(
            _baseline_table(provider_usage).insert(), [_usage(i, v) for i, v in enumerate(values)]
        )
        conn.execute(alert_outbox.insert(), [outbox])
        conn.execute(alert_delivery.insert(), [delivery])
        conn.execute(alert_silence.insert(), [silence])
    return values


def _assert_kept(wh: Warehouse, values: list[Decimal]) -> None:
    t = provider_usage
    with wh.engine.connect() as conn:
        rows = conn.execute(select(t.c.source_key, t.c.consumed_quantity, t.c.list_cost)).all()
        total = conn.execute(select(exact_sum(t.c.consumed_quantity))).scalar()
        alerts = [dict(r) for r in conn.execute(select(alert_outbox)).mappings()]
        deliveries = [dict(r) for r in conn.execute(select(alert_delivery)).mappings()]
        silences = [dict(r) for r in conn.execute(select(alert_silence)).mappings()]
    assert sorted((k, q, c) for k, q, c in rows) == [
        (f"rec-{i}", v, v) for i, v in enumerate(values)
    ]
    assert all(type(q) is Decimal for _k, q, _c in rows)
    assert total == functools.reduce(CONTEXT.add, values, D(0))  # 38 digits: exact context
    assert (alerts, deliveries, silences) == tuple([r] for r in _alert_rows())


def test_baseline_warehouse_upgrades_to_head_keeping_alerts_and_exact_values(
    db_url: str, db_backend: str
) -> None:
    engine = make_engine(db_url)
    assert migrate.upgrade(engine, migrate.BASELINE) == (None, migrate.BASELINE)
    values = _write_baseline_data(engine, wide=db_backend == "postgresql")
    if db_backend == "sqlite":  # the bug the upgrade fixes: the baseline stores floats
        with engine.connect() as conn:
            kinds = conn.execute(
                select(func.typeof(column("consumed_quantity"))).select_from(
                    table("provider_usage")
                )
            )
            assert {k for (k,) in kinds} <= {"real", "integer"}
    wh = Warehouse(db_url)
    wh.ensure_schema()  # the first use upgrades
    assert migrate.current_revision(wh.engine) == migrate.head_revision()
    _assert_kept(wh, values)
    # and the upgraded columns take what the baseline could not hold
    row = {**_usage(99, WIDE), "consumed_quantity": WIDE}
    wh.replace_days(provider_usage, [DAY], [row], match={"provider": "forge"})
    with wh.engine.connect() as conn:
        back = conn.execute(
            select(provider_usage.c.consumed_quantity).where(
                provider_usage.c.source_key == "rec-99"
            )
        ).scalar()
    assert back == WIDE


def test_warehouse_from_before_migrations_is_adopted(db_url: str) -> None:
    """Tables made by ``create_all`` (no version table, one table missing because that code
    predated it): the baseline keeps the tables there, creates the missing one, and upgrades."""
    engine = make_engine(db_url)
    migrate.upgrade(engine, migrate.BASELINE)
    values = _write_baseline_data(engine, wide=False)
    with engine.begin() as conn:
        Table(migrate.VERSION_TABLE, MetaData()).drop(conn)
        Table("usage_anomaly", MetaData()).drop(conn)
    assert migrate.current_revision(engine) is None
    wh = Warehouse(db_url)
    wh.ensure_schema()
    assert migrate.current_revision(wh.engine) == migrate.head_revision()
    _assert_kept(wh, values)
    assert inspect(wh.engine).has_table("usage_anomaly")
    assert _diff(wh.engine, migrate.all_tables_metadata()) == []


def test_db_upgrade_twice_is_idempotent(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--check", "--url", db_url]) == 1
    assert main(["db", "upgrade", "--url", db_url]) == 0
    first = capsys.readouterr().out
    assert f"empty -> {migrate.head_revision()}" in first
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(ledger_daily_usage.insert(), [_ledger_row()])
    assert main(["db", "upgrade", "--url", db_url]) == 0
    assert f"already at {migrate.head_revision()}" in capsys.readouterr().out
    assert main(["db", "current", "--check", "--url", db_url]) == 0
    assert "at head" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(select(ledger_daily_usage.c.credits)).scalar() == WIDE


def _ledger_row() -> dict[str, Any]:
    return {
        "usage_date": DAY, "entity_id": "e", "entity_type": "app", "resource_type": "r",
        "unit": "u", "quantity": None, "credits": WIDE, "events": 1, "load_id": "l",
    }  # fmt: skip


def _diff(engine: Any, metadata: MetaData) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": migrate.VERSION_TABLE}
        )
        return [d for d in compare_metadata(ctx, metadata) if migrate.VERSION_TABLE not in repr(d)]


def test_head_builds_exactly_the_tables_the_code_defines(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    assert _diff(engine, migrate.all_tables_metadata()) == []
    names = set(inspect(engine).get_table_names()) - {migrate.VERSION_TABLE}
    assert names == set(migrate.all_tables_metadata().tables)


# Tables later revisions create (the baseline never held them).
TABLES_AFTER_BASELINE = {
    "monthly_statement",  # 0003_monthly_statement
    "monthly_statement_break",
    "request_budget",  # 0004_request_budget: the request budget shared across hosts
    "request_budget_slot",
}
# Columns later revisions add to baseline tables (0005_budget_state).
COLUMNS_AFTER_BASELINE: dict[str, tuple[str, ...]] = {"budget_status": ("budget_state",)}


def test_baseline_is_the_schema_create_all_made_before_exact_types(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine, migrate.BASELINE)
    before = MetaData()
    for owned in migrate.all_tables_metadata().sorted_tables:
        if owned.name in TABLES_AFTER_BASELINE:
            continue
        copy = owned.to_metadata(before)
        for name in COLUMNS_AFTER_BASELINE.get(copy.name, ()):
            copy._columns.remove(copy.c[name])  # later revisions add these
        for c in copy.columns:
            if isinstance(c.type, ExactDecimal):
                c.type = Numeric(38, 12)
    assert _diff(engine, before) == []


def test_downgrade_to_base_drops_every_table_and_upgrades_again(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) == {migrate.VERSION_TABLE}
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert _diff(engine, migrate.all_tables_metadata()) == []
