"""The FOCUS dataset in the warehouse and its monthly export files.

``focus_cost_row`` holds one row per charge and day (FOCUS column names, ``x_`` columns), replaced
per day in one transaction; the SQL aggregates ``provider_usage`` per charge in the database
(SQLAlchemy Core, bound parameters). The export writes a month's exportable rows as CSV and
Parquet, each file replaced atomically under a lock shared by every process.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock
from sqlalchemy import Column, Date, DateTime, Index, Integer, String, Table, Text, func, select

from usage_orchestration.core.dates import iso_utc, month_of, month_start, naive_utc, next_month
from usage_orchestration.core.focus import (
    COST_REPORTED,
    CUSTOM_COLUMNS,
    FOCUS_COLUMNS,
    ChargeUsage,
    ColumnKind,
    export_columns,
    export_record,
)
from usage_orchestration.warehouse.schema import MONEY, QUANTITY, metadata, provider_usage
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration.warehouse.types import exact_sum

_IN_CHUNK = 500
_TEXT_COLUMNS = {"ChargeDescription", "Tags", "SubAccountId", "ResourceId", "ResourceName"}


def _column(name: str, kind: ColumnKind) -> Column[Any]:
    if kind == "decimal":
        return Column(name, MONEY if "Cost" in name or "Price" in name else QUANTITY)
    if kind == "datetime":
        return Column(name, DateTime)  # naive UTC, like provider_usage
    if kind == "integer":
        return Column(name, Integer)
    return Column(name, Text if name in _TEXT_COLUMNS else String(256))


focus_cost_row = Table(
    "focus_cost_row",
    metadata,
    Column("usage_date", Date, nullable=False),
    *(_column(n, k) for n, k in {**FOCUS_COLUMNS, **CUSTOM_COLUMNS}.items()),
    Column("load_id", String(64), nullable=False),
    Index("ix_focus_cost_row_day", "usage_date", "x_Provider"),
)

_DATETIMES = [n for n, k in FOCUS_COLUMNS.items() if k == "datetime"]


def charge_usage(
    warehouse: Warehouse, days: Sequence[date], providers: Sequence[str]
) -> list[ChargeUsage]:
    """``provider_usage`` of ``days`` summed per charge (provider, account, resource,
    sub-account, metric, charge period, units, currency), in SQL. ``rows_with_cost`` counts
    the rows that reported a cost, so a partly priced charge is not taken for a priced one."""
    t = provider_usage
    keys = (
        t.c.usage_date,
        t.c.provider,
        t.c.billing_account_id,
        t.c.resource_id,
        t.c.resource_name,
        t.c.sub_account_id,
        t.c.metric,
        t.c.charge_period_start,
        t.c.charge_period_end,
        t.c.consumed_unit,
        t.c.raw_unit,
        t.c.billing_currency,
    )
    sums = (
        exact_sum(t.c.consumed_quantity).label("consumed_quantity"),
        exact_sum(t.c.raw_quantity).label("raw_quantity"),
        exact_sum(t.c.billed_cost).label("billed_cost"),
        func.count().label("rows"),
        func.count(t.c.billed_cost).label("rows_with_cost"),
    )
    out: list[ChargeUsage] = []
    if not providers:
        return out
    ordered = sorted(set(days))
    with warehouse.engine.connect() as conn:
        for i in range(0, len(ordered), _IN_CHUNK):
            stmt = (
                select(*keys, *sums)
                .where(t.c.usage_date.in_(ordered[i : i + _IN_CHUNK]))
                .where(t.c.provider.in_(list(providers)))
                .group_by(*keys)
                .order_by(*keys)
            )
            out.extend(ChargeUsage(**_decimals(r._mapping)) for r in conn.execute(stmt))
    return out


def _decimals(row: Mapping[str, Any]) -> dict[str, Any]:
    # SQLite's SUM of NUMERIC comes back as float: back to the decimal it stored
    out = dict(row)
    for k in ("consumed_quantity", "raw_quantity", "billed_cost"):
        v = out[k]
        if v is not None and not isinstance(v, Decimal):
            out[k] = Decimal(str(v))
    return out


def write_focus_rows(
    warehouse: Warehouse, days: Sequence[date], rows: Iterable[Mapping[str, Any]], load_id: str
) -> int:
    """Replace ``days`` of ``focus_cost_row`` with ``rows`` in one transaction."""
    records = []
    for r in rows:
        rec = {c.name: r.get(c.name) for c in focus_cost_row.columns if c.name != "load_id"}
        for name in _DATETIMES:
            rec[name] = naive_utc(rec[name])
        records.append({**rec, "load_id": load_id})
    return warehouse.replace_days(focus_cost_row, days, records)


def month_rows(warehouse: Warehouse, month: date, *, exportable_only: bool) -> list[dict[str, Any]]:
    """The month's rows of ``focus_cost_row``, in a stable order."""
    t = focus_cost_row
    stmt = select(t).where(t.c.usage_date >= month_start(month), t.c.usage_date < next_month(month))
    if exportable_only:
        stmt = stmt.where(t.c.x_CostStatus == COST_REPORTED)
    stmt = stmt.order_by(
        t.c.usage_date, t.c.x_Provider, t.c.BillingAccountId, t.c.ResourceId, t.c.SubAccountId,
        t.c.x_Metric, t.c.ChargePeriodStart, t.c.PricingUnit,
    )  # fmt: skip
    warehouse.ensure_schema()
    with warehouse.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def export_paths(export_dir: str | Path, month: date) -> tuple[Path, Path]:
    """The month's CSV and Parquet files."""
    base = Path(export_dir) / f"focus_costs_{month_of(month)}"
    return base.with_suffix(".csv"), base.with_suffix(".parquet")


def export_month(
    warehouse: Warehouse, export_dir: str | Path, month: date
) -> tuple[Path, Path, int]:
    """Write the month's exportable rows as CSV and Parquet (each replaced atomically; one
    writer per month at a time, reading the table inside the lock so the last writer's files
    hold every committed day). Returns both paths and the row count."""
    csv_path, parquet_path = export_paths(export_dir, month)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path.parent / f".{csv_path.stem}.lock")):
        records = [export_record(r) for r in month_rows(warehouse, month, exportable_only=True)]
        _atomic(csv_path, lambda p: write_csv(p, records))
        _atomic(parquet_path, lambda p: write_parquet(p, records))
    return csv_path, parquet_path, len(records)


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""  # FOCUS CSV: an empty field is null
    if isinstance(v, datetime):
        return iso_utc(v)
    if isinstance(v, Decimal):
        # always with a point: readers that infer types (pandas, hence focus-validator) take
        # "60" for an integer column, which FOCUS's decimal check rejects
        text = format(v.normalize(), "f")
        return text if "." in text else f"{text}.0"
    return str(v)


def write_csv(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    columns = list(export_columns())
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in records:
            w.writerow([_csv_cell(r[c]) for c in columns])


_ARROW: dict[ColumnKind, pa.DataType] = {
    # float64: focus-validator reads decimals as floats (pandas); 15+ significant digits
    "decimal": pa.float64(),
    "string": pa.string(),
    "datetime": pa.timestamp("s", tz="UTC"),
    "integer": pa.int64(),
}


def _arrow_value(kind: ColumnKind, v: Any) -> Any:
    if v is None:
        return None
    if kind == "decimal":
        return float(v)
    if kind == "datetime":
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v  # stored naive UTC
    return v


def write_parquet(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    columns = export_columns()
    schema = pa.schema([(name, _ARROW[kind]) for name, kind in columns.items()])
    arrays = [
        pa.array([_arrow_value(kind, r[name]) for r in records], type=_ARROW[kind])
        for name, kind in columns.items()
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
