"""Exact decimals on every backend: the column type and the SQL sum of money and quantities.

PostgreSQL stores NUMERIC(38, 12) and sums it exactly. SQLite has no exact decimal: a NUMERIC
column keeps a binary float (123456789.123456789012 comes back as 123456789.123456791043), and
64-bit scaled integers hold only ~9.2e6 at 12 decimals. So on SQLite the value is stored as its
canonical decimal TEXT (fixed 12 decimals: equal numbers have equal text, so DISTINCT and
equality stay numeric), and sums use ``decimal_sum``, a Python aggregate over ``Decimal``
installed on every connection (``install_sqlite_functions``, from ``make_engine``'s connect
event): SQLite's own SUM over TEXT would return a float again. ``exact_sum(col)`` picks the
backend's sum; use it instead of ``func.sum`` for every money or quantity column.

On SQLite, ORDER BY and < > over these columns compare text, not numbers: compare in Python
(the project does), or add a numeric helper before doing it in SQL.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Numeric, Text, cast, func
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from usage_orchestration.core.money import (
    CONTEXT,
    PRECISION,
    SCALE,
    fits,
    range_problem,
    storage_text,
)

SQLITE_SUM = "decimal_sum"


def to_decimal(value: Any) -> Decimal:
    """A stored value as a Decimal: canonical text, an integer, or (data written before the
    exact type) a float, taken at its shortest round-trip spelling."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value if isinstance(value, str) else int(value))


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(38, 12) on PostgreSQL; canonical decimal TEXT on SQLite. Always a Decimal."""

    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        if fits(value):  # the common case, checked quickly: a finite Decimal in range
            return storage_text(value)
        if isinstance(value, float):
            raise ValueError(f"{value!r}: a binary float where an exact decimal is stored")
        problem = range_problem(value)
        if problem is not None:  # PostgreSQL refuses these too (numeric field overflow)
            raise ValueError(f"{problem}: beyond NUMERIC({PRECISION}, {SCALE})")
        return storage_text(to_decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else to_decimal(value)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class exact_sum(FunctionElement[Decimal]):  # lower case: reads like func.sum in queries
    """SUM of a money or quantity column, exact on every backend (a Decimal, None if no rows)."""

    name = "exact_sum"
    inherit_cache = True
    type = ExactDecimal()


@compiles(exact_sum)
def _sum(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(func.sum(*element.clauses.clauses), **kw)


@compiles(exact_sum, "sqlite")
def _sum_sqlite(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(getattr(func, SQLITE_SUM)(*element.clauses.clauses), **kw)


class decimal_text(FunctionElement[str]):  # lower case: reads like a column in queries
    """A money or quantity column as its canonical decimal text (fixed 12 decimals, ``str``),
    read without making a Decimal of it: for files written straight from a query. SQLite stores
    that text; PostgreSQL's NUMERIC(38, 12) spells it so when cast."""

    name = "decimal_text"
    inherit_cache = True
    type = Text()


@compiles(decimal_text)
def _text(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses.clauses
    return compiler.process(cast(column, Text), **kw)


@compiles(decimal_text, "sqlite")
def _text_sqlite(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses.clauses
    return compiler.process(column, **kw)


class DecimalSum:
    """SQLite aggregate: the exact Decimal sum of stored amounts, as canonical text."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        try:
            d = to_decimal(value)
        except (InvalidOperation, ValueError, TypeError):
            raise ValueError(f"{SQLITE_SUM}: {value!r} is not a decimal") from None
        self.total = d if self.total is None else CONTEXT.add(self.total, d)

    def finalize(self) -> str | None:
        # a sum may need more digits than a stored value: exact text, at least 12 decimals
        if self.total is None:
            return None
        return (
            format(self.total, "f")
            if self.total.as_tuple().exponent < -SCALE
            else (storage_text(self.total))
        )


def install_sqlite_functions(dbapi_connection: Any) -> None:
    """Register ``decimal_sum`` on a sqlite3 connection."""
    dbapi_connection.create_aggregate(SQLITE_SUM, 1, DecimalSum)
