"""The monthly statement's SQL and files.

Reads the month from the warehouse (SQLAlchemy Core, bound parameters, sums in the database
with ``exact_sum``): every ``budget_status`` day of the month, ``usage_reconciliation`` summed
per entity, provider and resource type and its breaks per status, and ``provider_cap_status``
on the month's last budget day. Writes ``monthly_statement`` and ``monthly_statement_break``,
replacing the month's rows in one transaction, and the CSV and HTML files under
``<state_dir>/statements/`` (each replaced atomically under a lock per month).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock
from sqlalchemy import Select, Table, and_, case, func, select

from usage_orchestration.core.budgets import BudgetRow, ProviderCapRow
from usage_orchestration.core.dates import month_end, month_of, month_start
from usage_orchestration.core.statement import (
    MATCHED,
    STATEMENT_COLUMNS,
    BreakLine,
    ProviderLine,
    Statement,
)
from usage_orchestration.core.statement_html import render_statement
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    monthly_statement,
    monthly_statement_break,
    provider_cap_status,
    usage_reconciliation,
)
from usage_orchestration.warehouse.store import Warehouse, insert_rows, lock_replace
from usage_orchestration.warehouse.types import exact_sum

T = TypeVar("T")


def _span(column: Any, month: date) -> Any:
    return and_(column >= month_start(month), column <= month_end(month))


def _read(warehouse: Warehouse, query: Select[Any], row: Callable[..., T]) -> list[T]:
    """``query``'s rows, each made into ``row`` from its columns by name."""
    warehouse.ensure_schema()
    with warehouse.engine.connect() as conn:
        return [row(**r._mapping) for r in conn.execute(query)]


def _fields_of(table: Table, row: type[Any]) -> list[Any]:
    """The columns of ``table`` that the dataclass ``row`` holds, in its field order."""
    return [table.c[name] for name in row.__dataclass_fields__]


def _month_reconciliation(
    month: date, keys: Sequence[str], *sums: Any, where: Sequence[Any] = ()
) -> Select[Any]:
    """The month's ``usage_reconciliation`` rows that meet ``where``, summed (``sums``) per
    ``keys``, in their order."""
    t = usage_reconciliation
    by = [t.c[k] for k in keys]
    return (
        select(*by, *sums).where(_span(t.c.usage_date, month), *where).group_by(*by).order_by(*by)
    )


def budget_days(warehouse: Warehouse, month: date) -> list[BudgetRow]:
    """Every ``budget_status`` row of the month (one per materialized day and entity)."""
    t = budget_status
    query = (
        select(*_fields_of(t, BudgetRow))
        .where(_span(t.c.as_of_date, month))
        .order_by(t.c.as_of_date, t.c.entity_id)
    )
    return _read(warehouse, query, BudgetRow)


def provider_lines(warehouse: Warehouse, month: date) -> list[ProviderLine]:
    """The month's reconciliation summed per entity, provider, resource type and unit."""
    t = usage_reconciliation
    query = _month_reconciliation(
        month,
        ("entity_id", "provider", "resource_type", "ledger_unit"),
        exact_sum(t.c.expected_quantity).label("usage_quantity"),
        exact_sum(t.c.expected_credits).label("expected_credits"),
        exact_sum(t.c.recorded_credits).label("credits_charged"),
        exact_sum(t.c.delta_credits).label("delta_credits"),
        func.count(func.distinct(t.c.usage_date)).label("days"),
    )
    return _read(warehouse, query, ProviderLine)


def break_lines(warehouse: Warehouse, month: date) -> list[BreakLine]:
    """The month's reconciliation rows that did not match, per entity, provider, resource type
    and status, with their summed delta."""
    t = usage_reconciliation
    query = _month_reconciliation(
        month,
        ("entity_id", "provider", "resource_type", "status"),
        func.count().label("rows"),
        exact_sum(t.c.delta_credits).label("delta_credits"),
        where=[t.c.status != MATCHED],
    )
    return _read(warehouse, query, BreakLine)


def cap_lines(warehouse: Warehouse, as_of: date | None) -> list[ProviderCapRow]:
    """The provider caps as of ``as_of`` (none without a day)."""
    if as_of is None:
        return []
    t = provider_cap_status
    query = (
        select(*_fields_of(t, ProviderCapRow))
        .where(t.c.as_of_date == as_of)
        .order_by(t.c.provider, t.c.metric, t.c.unit)
    )
    return _read(warehouse, query, ProviderCapRow)


def write_statement(warehouse: Warehouse, statement: Statement, load_id: str) -> int:
    """Replace the month's rows of both statement tables in one transaction; returns the number
    of ``monthly_statement`` rows."""
    rows = statement.records(load_id)
    breaks = statement.break_records(load_id)
    key = statement.month_key
    warehouse.ensure_schema()
    with warehouse.engine.begin() as conn:
        for table, new in ((monthly_statement, rows), (monthly_statement_break, breaks)):
            lock_replace(conn, table.name, {"month": key})
            conn.execute(table.delete().where(table.c.month == key))
            insert_rows(conn, table, new)  # checks every amount fits before writing
    return len(rows)


def statement_rows(warehouse: Warehouse, month: date) -> list[dict[str, Any]]:
    """The month's stored ``monthly_statement`` rows: each entity's line first, then its
    providers."""
    t = monthly_statement
    query = (
        select(t)
        .where(t.c.month == month_of(month))
        .order_by(
            case((t.c.entity_id == "", 1), else_=0),
            t.c.entity_id,
            case((t.c.provider == "all", 0), else_=1),
            t.c.provider,
            t.c.resource_type,
        )
    )
    return _read(warehouse, query, dict)


def statement_paths(directory: str | Path, month: date) -> tuple[Path, Path]:
    """The month's CSV and HTML files."""
    base = Path(directory) / f"statement_{month_of(month)}"
    return base.with_suffix(".csv"), base.with_suffix(".html")


def export_statement(
    warehouse: Warehouse, directory: str | Path, statement: Statement
) -> tuple[Path, Path]:
    """Write the month's CSV (the stored rows, read back inside the lock) and HTML page, each
    replaced atomically; one writer per month at a time."""
    csv_path, html_path = statement_paths(directory, statement.month)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path.parent / f".{csv_path.stem}.lock")):
        rows = statement_rows(warehouse, statement.month)
        _atomic(csv_path, lambda p: write_csv(p, rows))
        page = render_statement(statement)
        _atomic(html_path, lambda p: p.write_text(page, encoding="utf-8"))
    return csv_path, html_path


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # a page for people to open (mkstemp makes it owner-only)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        return format(v, "f")  # the stored 12 decimals: the CSV is for machines
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(STATEMENT_COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in STATEMENT_COLUMNS])
