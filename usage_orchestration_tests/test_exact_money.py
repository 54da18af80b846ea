"""Exact money and quantities on every backend: storage, SQL sums, range checks, rounding.

Every table's money and quantity columns get the extreme values of NUMERIC(38, 12) and come back
exactly, and ``exact_sum`` (the sum every aggregate of the project uses) adds them exactly, on
SQLite (decimal text + the ``decimal_sum`` aggregate) and on PostgreSQL (NUMERIC).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Boolean, Date, DateTime, Integer, Table, func, select

from usage_orchestration.core import money
from usage_orchestration.core.money import CONTEXT, StorageRangeError
from usage_orchestration.warehouse.analysis import provider_aggregates, provider_daily_quantity
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    provider_cap_status,
    usage_anomaly,
    usage_reconciliation,
)
from usage_orchestration.warehouse.migrate import all_tables_metadata
from usage_orchestration.warehouse.provider_load import usage_totals
from usage_orchestration.warehouse.schema import provider_usage
from usage_orchestration.warehouse.store import Warehouse, insert_rows
from usage_orchestration.warehouse.types import ExactDecimal, exact_sum

D = Decimal
MAX = D("99999999999999999999999999.999999999999")
TINY = D("0.000000000001")
ODD = D("123456789.123456789012")
# each with its negative (built from text: unary minus would round in the default 28 digits)
EXTREMES = [MAX, TINY, ODD, D("-" + str(MAX)), D("-0.000000000001"), D("-123456789.123456789012")]
DAY = date(2026, 3, 1)


def _exact_tables() -> list[Table]:
    tables = all_tables_metadata().sorted_tables
    return [t for t in tables if any(isinstance(c.type, ExactDecimal) for c in t.columns)]


def _filler(column: Any, i: int) -> Any:
    """A value for a non-decimal column, distinct per row where it may be part of a key."""
    if isinstance(column.type, Date):
        return DAY
    if isinstance(column.type, DateTime):
        return datetime(2026, 3, 1, 12)
    if isinstance(column.type, Boolean):
        return False
    if isinstance(column.type, Integer):
        return i
    return f"k{i}"


def _rows(table: Table, values: list[Decimal]) -> list[dict[str, Any]]:
    return [
        {
            c.name: v if isinstance(c.type, ExactDecimal) else _filler(c, i)
            for c in table.columns
            if not (c.autoincrement is True and c.primary_key)
        }
        for i, v in enumerate(values)
    ]


def test_every_money_and_quantity_column_round_trips_and_sums_exactly(db_url: str) -> None:
    wh = Warehouse(db_url)
    wh.ensure_schema()
    tables = _exact_tables()
    assert {t.name for t in tables} >= {
        "provider_usage",
        "provider_usage_staging",
        "ledger_daily_usage",
        "usage_reconciliation",
        "budget_status",
        "credit_pool_status",
        "provider_cap_status",
        "usage_anomaly",
        "focus_cost_row",
    }
    for table in tables:
        # credit_pool_status is keyed by the day alone: one row per extreme, on its own day
        for value in EXTREMES if table.name == "credit_pool_status" else [None]:
            values = [value] if value is not None else EXTREMES
            with wh.engine.begin() as conn:
                conn.execute(table.delete())
                insert_rows(conn, table, _rows(table, values))
            _assert_back(wh, table, values)


def _assert_back(wh: Warehouse, table: Table, values: list[Decimal]) -> None:
    exact = [c for c in table.columns if isinstance(c.type, ExactDecimal)]
    total = D(0)
    for v in values:
        total = CONTEXT.add(total, v)
    with wh.engine.connect() as conn:
        back = conn.execute(select(*exact)).all()
        sums = conn.execute(select(*(exact_sum(c) for c in exact))).one()
    assert sorted(r[0] for r in back) == sorted(values), table.name
    for row in back:
        assert all(type(v) is Decimal for v in row), table.name
        assert len(set(row)) == 1, f"{table.name}: one value per row, in every column"
    assert list(sums) == [total] * len(exact), table.name


def test_copy_and_insert_paths_store_the_same_exact_values(db_url: str) -> None:
    """Hundreds of rows (COPY on PostgreSQL) of awkward values; sums over them stay exact."""
    wh = Warehouse(db_url)
    wh.ensure_schema()
    values = [ODD + TINY * i for i in range(300)]
    rows = _rows(provider_usage, values)
    for r in rows:
        r.update(
            provider="forge", metric="m", consumed_unit="u", resource_id="r", sub_account_id="s"
        )
    wh.replace_days(provider_usage, [DAY], rows, match={"provider": "forge"})
    expected = D(0)
    for v in values:
        expected = CONTEXT.add(expected, v)
    (total,) = usage_totals(wh, "forge", [DAY])
    assert total["quantity"] == expected and total["billed_cost"] == expected
    assert total["list_cost"] == expected and total["rows"] == 300
    (agg,) = provider_aggregates(wh, [DAY], ["forge"])[DAY]
    assert agg.quantity == expected and agg.rows == 300
    daily, _complete, _units = provider_daily_quantity(wh, "forge", "m", "u", DAY, DAY)
    assert daily == {DAY: expected}


def test_sum_of_nothing_is_null_and_null_values_are_skipped(db_url: str) -> None:
    wh = Warehouse(db_url)
    wh.ensure_schema()
    t = usage_reconciliation
    with wh.engine.connect() as conn:
        assert conn.execute(select(exact_sum(t.c.delta_credits))).scalar() is None
    rows = _rows(t, [ODD, TINY])
    rows[1]["delta_credits"] = None
    wh.replace_days(t, [DAY], rows)
    with wh.engine.connect() as conn:
        assert conn.execute(select(exact_sum(t.c.delta_credits))).scalar() == ODD
        n = conn.execute(select(func.count(t.c.delta_credits))).scalar()
    assert n == 1


@pytest.mark.parametrize(
    ("table", "field", "ids"),
    [
        (usage_reconciliation, "delta_credits", {"provider": "neon", "entity_id": "ent-7"}),
        (budget_status, "forecast_month_end", {"entity_id": "ent-7"}),
        (provider_cap_status, "used_quantity", {"provider": "forge", "metric": "fn_gb_s"}),
        (usage_anomaly, "impact_credits", {"entity_id": "ent-7", "resource_type": "compute"}),
    ],
)
def test_values_beyond_the_storage_fail_before_the_write(
    db_url: str, table: Table, field: str, ids: dict[str, str]
) -> None:
    wh = Warehouse(db_url)
    day_column = "as_of_date" if "as_of_date" in table.c else "usage_date"
    wh.replace_days(table, [DAY], _rows(table, [TINY]), day_column=day_column)
    bad = _rows(table, [ODD])
    bad[0].update(ids)
    bad[0][field] = D("1E+26")
    with pytest.raises(StorageRangeError) as err:
        wh.replace_days(table, [DAY], bad, day_column=day_column)
    message = str(err.value)
    # names the table, the row (provider / account or entity, day) and the field
    assert table.name in message and f"field {field}" in message and "26 digits" in message
    for name, value in {**ids, day_column: DAY.isoformat()}.items():
        assert f"{name} {value}" in message
    with wh.engine.connect() as conn:  # the replace was refused: the old rows are still there
        assert conn.execute(select(func.count()).select_from(table)).scalar() == 1


def test_a_binary_float_is_refused() -> None:
    assert money.range_problem(0.1) is not None
    with pytest.raises(StorageRangeError, match="binary float"):
        money.check_storable(0.1, "budget_status entity_id e", "credits_used")


def test_one_rounding_scale_and_two_decimal_display() -> None:
    assert money.CREDITS_QUANTUM == money.QUANTITY_QUANTUM == D("1E-12")
    assert money.quantize_credits(D(2) / D(3)) == D("0.666666666667")
    assert money.quantize(D("0.0000000000005")) == D("0.000000000001")  # half away from zero
    assert money.quantize(D("-0.0000000000005")) == D("-0.000000000001")
    assert money.quantize(MAX) == MAX  # 38 digits: beyond the default context's 28
    assert money.format_credits(D("1234.565")) == "1,234.57"
    assert money.format_credits(None) == "-"
    assert money.credits_metadata(D("18.004999999999")) == 18.0
    assert money.storage_text(D("-0")) == "0.000000000000"
    assert money.storage_text(D("1.5")) == money.storage_text(D("1.500")) == "1.500000000000"
    assert money.fits(MAX) and not money.fits(D("1E+26")) and not money.fits(D("NaN"))


def test_reconciliation_and_budgets_round_at_the_storage_scale() -> None:
    from usage_orchestration.core import budgets, reconcile

    third = D(1) / D(3)
    assert reconcile._q(third) == budgets._m(third) == D("0.333333333333")


def test_a_provider_row_beyond_the_storage_names_provider_account_and_day(db_url: str) -> None:
    wh = Warehouse(db_url)
    wh.ensure_schema()
    (row,) = _rows(provider_usage, [TINY])
    row.update(provider="forge", resource_id="acct-9", list_cost=D("-1E+26"))
    with pytest.raises(StorageRangeError) as err, wh.engine.begin() as conn:
        insert_rows(conn, provider_usage, [row])
    message = str(err.value)
    for part in ("provider forge", "usage_date 2026-03-01", "resource_id acct-9", "list_cost"):
        assert part in message
