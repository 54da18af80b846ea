"""The FOCUS dataset in the warehouse and its monthly export files.

``focus_cost_row`` holds one row per charge and day (FOCUS column names, ``x_`` columns), replaced
per day in one transaction; the SQL aggregates ``provider_usage`` per charge in the database
(SQLAlchemy Core, bound parameters). The export writes a month's exportable rows as CSV and
Parquet, each file replaced atomically under a lock shared by every process.

Both directions stream so that memory is bounded by a chunk, not by the run's range: the rows are
built and inserted a chunk of days at a time inside the one replacing transaction, and a month's
files are written from the table in batches (a server-side cursor on PostgreSQL) through the csv
module and a Parquet writer, one record batch per chunk.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.engine import Connection

from usage_orchestration.core.dates import iso_utc, month_of, month_start, naive_utc, next_month
from usage_orchestration.core.focus import (
    COST_REPORTED,
    CUSTOM_COLUMNS,
    FOCUS_COLUMNS,
    ChargeUsage,
    ColumnKind,
    export_columns,
    export_sources,
)
from usage_orchestration.warehouse.schema import MONEY, QUANTITY, metadata, provider_usage
from usage_orchestration.warehouse.store import Warehouse, each_distinct, insert_columns
from usage_orchestration.warehouse.types import decimal_text, exact_sum

_IN_CHUNK = 500
# Days read, built and inserted at a time: a week of the demo's charges is a few thousand rows.
CHUNK_DAYS = 7
# Rows fetched per round trip and per Parquet record batch when a month is exported.
EXPORT_BATCH = 2000
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


def _charge_stmt(days: Sequence[date], providers: Sequence[str]) -> Select[Any]:
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
    return (
        select(*keys, *sums)
        .where(t.c.usage_date.in_(list(days)))
        .where(t.c.provider.in_(list(providers)))
        .group_by(*keys)
        .order_by(*keys)
    )


def _charges(conn: Connection, days: Sequence[date], providers: Sequence[str]) -> list[ChargeUsage]:
    """``provider_usage`` of ``days`` summed per charge (provider, account, resource,
    sub-account, metric, charge period, units, currency), in SQL (the sums exact Decimals on
    every backend). ``rows_with_cost`` counts the rows that reported a cost, so a partly priced
    charge is not taken for a priced one."""
    out: list[ChargeUsage] = []
    if not providers or not days:
        return out
    ordered = sorted(set(days))
    for i in range(0, len(ordered), _IN_CHUNK):
        result = conn.execute(_charge_stmt(ordered[i : i + _IN_CHUNK], providers))
        # validated as ever, from plain dicts: a Row's ``_mapping`` per row cost as much as
        # the validation itself (a year: ~60,000 charges)
        names = list(result.keys())
        out.extend(ChargeUsage(**dict(zip(names, r, strict=True))) for r in result)
    return out


def day_chunks(days: Sequence[date], size: int) -> Iterator[list[date]]:
    """``days`` in order, ``size`` at a time."""
    ordered = sorted(set(days))
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]


def replace_focus_days(
    warehouse: Warehouse,
    days: Sequence[date],
    providers: Sequence[str],
    build: Callable[[list[ChargeUsage]], list[dict[str, Any]]],
    load_id: str,
) -> int:
    """Replace ``days`` of ``focus_cost_row`` in one transaction with ``build``'s rows of their
    charges, read, built and inserted ``CHUNK_DAYS`` at a time (memory bounded by a chunk; a
    failure in any chunk rolls the whole replacement back). Returns the rows inserted."""
    warehouse.ensure_schema()
    written = 0
    with warehouse.engine.begin() as conn:
        # the lock and the delete of every day, then the chunks' inserts, in this transaction
        warehouse.replace_days(focus_cost_row, days, [], conn=conn)
        for chunk in day_chunks(days, CHUNK_DAYS):
            # fetched whole before inserting: one cursor at a time on the connection
            columns = _stored_columns(build(_charges(conn, chunk, providers)), load_id)
            allowed = set(chunk)
            for day in columns["usage_date"]:
                if day not in allowed:
                    raise ValueError(f"focus_cost_row: row for {day} outside {chunk}")
            insert_columns(conn, focus_cost_row, columns)
            written += len(columns["usage_date"])
    return written


_BUILT = [c.name for c in focus_cost_row.columns if c.name != "load_id"]


def _stored_columns(rows: Sequence[Mapping[str, Any]], load_id: str) -> dict[str, list[Any]]:
    """FOCUS rows by column of ``focus_cost_row``: timestamps naive UTC, as stored (each
    distinct one converted once: a month's billing period, an hour's charges)."""
    gets = [r.get for r in rows]  # each row's lookup bound once, not once per column
    columns = {name: [get(name) for get in gets] for name in _BUILT}
    for name in _DATETIMES:
        columns[name] = each_distinct(naive_utc, columns[name])
    columns["load_id"] = [load_id] * len(rows)
    return columns


_STORED = [*FOCUS_COLUMNS, *CUSTOM_COLUMNS]


def _month_stmt(month: date) -> Select[Any]:
    """The month's exportable rows, in a stable order; decimals as their stored text (the files
    want text and floats, not Decimals)."""
    t = focus_cost_row
    kinds = {**FOCUS_COLUMNS, **CUSTOM_COLUMNS}
    columns = [
        decimal_text(t.c[name]).label(name) if kinds[name] == "decimal" else t.c[name]
        for name in _STORED
    ]
    stmt = select(*columns).where(
        t.c.usage_date >= month_start(month),
        t.c.usage_date < next_month(month),
        t.c.x_CostStatus == COST_REPORTED,
    )
    return stmt.order_by(
        t.c.usage_date, t.c.x_Provider, t.c.BillingAccountId, t.c.ResourceId, t.c.SubAccountId,
        t.c.x_Metric, t.c.ChargePeriodStart, t.c.PricingUnit,
    )  # fmt: skip


def _month_batches(warehouse: Warehouse, month: date) -> Iterator[Columns]:
    """The month's export, ``EXPORT_BATCH`` rows at a time, each batch by export column (an
    alias is its source's column again; ``yield_per``: a server-side cursor on PostgreSQL, so
    the month is never in memory at once)."""
    warehouse.ensure_schema()
    sources = list(export_sources().values())
    with warehouse.engine.connect() as conn:
        result = conn.execution_options(yield_per=EXPORT_BATCH).execute(_month_stmt(month))
        for part in result.partitions():
            stored = dict(zip(_STORED, zip(*part, strict=True), strict=True))
            yield [stored[name] for name in sources]


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
        csv_tmp, parquet_tmp = _temp_path(csv_path), _temp_path(parquet_path)
        try:
            n = 0
            with _CsvSink(csv_tmp) as csv_sink, _ParquetSink(parquet_tmp) as parquet_sink:
                for columns in _month_batches(warehouse, month):
                    csv_sink.write(columns)
                    parquet_sink.write(columns)
                    n += len(columns[0])
            # each file replaced whole: a reader sees the old month or the new one
            os.replace(csv_tmp, csv_path)
            os.replace(parquet_tmp, parquet_path)
        finally:
            for tmp in (csv_tmp, parquet_tmp):
                if tmp.exists():
                    tmp.unlink()
    return csv_path, parquet_path, n


def _temp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


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


# Stored decimal text (``decimal_text``); at most 28 digits, which normalize() keeps exact.
_CANONICAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]{12}")
_CANONICAL_LEN = 29


def _csv_decimal(v: Any) -> str:
    """``_csv_cell`` of a decimal, straight from its stored text: the trailing zeros dropped,
    the point kept (any other spelling goes through Decimal)."""
    if type(v) is not str:
        return _csv_cell(v)
    if len(v) > _CANONICAL_LEN or _CANONICAL.fullmatch(v) is None:
        return _csv_cell(Decimal(v))
    text = v.rstrip("0")
    return f"{text}0" if text.endswith(".") else text


# A batch of export rows by column, in the order of ``export_columns()``: the query yields it,
# and each file converts a column at a time.
Columns = Sequence[Sequence[Any]]

# The csv module writes text and integers as str() does and None as an empty field: only
# decimals and timestamps need their FOCUS form.
_CSV_CELLS: dict[ColumnKind, Callable[[Any], str] | None] = {
    "decimal": _csv_decimal,
    "datetime": _csv_cell,
    "string": None,
    "integer": None,
}


def _by_column(records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    return [[r[name] for r in records] for name in export_columns()]


class _Sink(ABC):
    """An export file written a batch (by column) at a time, closed on leaving its block."""

    @abstractmethod
    def __init__(self, path: Path) -> None: ...

    @abstractmethod
    def write(self, columns: Columns) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def write_file(cls, path: Path, records: Sequence[Mapping[str, Any]]) -> None:
        """``records`` (dicts by export column) as one whole file at ``path``."""
        with cls(path) as sink:
            sink.write(_by_column(records))


class _CsvSink(_Sink):
    """A CSV file written a batch at a time (header first, even with no rows)."""

    def __init__(self, path: Path) -> None:
        self._cells = [_CSV_CELLS[kind] for kind in export_columns().values()]
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(export_columns())

    def write(self, columns: Columns) -> None:
        cells = [
            # few distinct values per batch: a month's billing period, an hour's charges, a price
            col if convert is None else each_distinct(convert, col)
            for col, convert in zip(columns, self._cells, strict=True)
        ]
        self._writer.writerows(zip(*cells, strict=True))

    def close(self) -> None:
        self._file.close()


write_csv = _CsvSink.write_file


_ARROW: dict[ColumnKind, pa.DataType] = {
    # float64: focus-validator reads decimals as floats (pandas); 15+ significant digits
    "decimal": pa.float64(),
    "string": pa.string(),
    "datetime": pa.timestamp("s", tz="UTC"),
    "integer": pa.int64(),
}


def _schema() -> pa.Schema:
    return pa.schema([(name, _ARROW[kind]) for name, kind in export_columns().items()])


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


class _ParquetSink(_Sink):
    """A Parquet file written one record batch (row group) per batch; a file with no rows still
    carries the schema."""

    def __init__(self, path: Path) -> None:
        self.schema = _schema()
        self._kinds = list(export_columns().values())
        self._writer = pq.ParquetWriter(path, self.schema)

    def write(self, columns: Columns) -> None:
        if not columns[0]:
            return
        arrays = [
            pa.array(
                # pyarrow takes datetimes (naive ones as UTC, as stored), text and integers as
                # they are; only decimals need converting (float(): correctly rounded)
                each_distinct(_float, col) if kind == "decimal" else col,
                type=_ARROW[kind],
            )
            for col, kind in zip(columns, self._kinds, strict=True)
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


write_parquet = _ParquetSink.write_file
