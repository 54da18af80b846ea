"""The warehouse: an engine, its schema (migrated to head on first use), and atomic
replacement of a set of days."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Date,
    DateTime,
    Engine,
    Integer,
    Table,
    and_,
    cast,
    create_engine,
    event,
    func,
    make_url,
    select,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeEngine

from usage_orchestration.core.money import check_storable, fits, range_problem
from usage_orchestration.warehouse.types import ExactDecimal, install_sqlite_functions

_IN_CHUNK = 500
_T = TypeVar("_T")


def normalize_url(url: str) -> str:
    """Pin the PostgreSQL driver of the project's own engines to psycopg 3 (SQLAlchemy 2.1's
    default for ``postgresql://``, and the one whose COPY the bulk writes use). The Dagster
    instance is another matter: dagster-postgres brings and uses psycopg2."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory, WAL and a busy timeout so that
    concurrent runs wait for each other instead of failing with 'database is locked', and the
    exact ``decimal_sum`` aggregate (``warehouse/types.py``) on every connection."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
            install_sqlite_functions(dbapi_conn)

        return engine
    return create_engine(url, pool_pre_ping=True)


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and metadata."""
    return make_url(url).render_as_string(hide_password=True)


class Warehouse:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"Warehouse({safe_url(self.url)!r})"

    def ensure_schema(self) -> None:
        """Upgrade the schema to the newest revision on first use (``warehouse/migrate.py``:
        serialized across processes, a no-op when already current)."""
        if self._schema_ready:
            return
        from usage_orchestration.warehouse.migrate import ensure_current

        ensure_current(self.engine)
        self._schema_ready = True

    def replace_days(
        self,
        table: Table,
        days: Sequence[date],
        rows: Iterable[Mapping[str, Any]],
        *,
        match: Mapping[str, Any] | None = None,
        day_column: str = "usage_date",
        conn: Connection | None = None,
    ) -> int:
        """Delete ``table``'s rows for ``days`` (and ``match``) and insert ``rows``, in one
        transaction (or inside ``conn``'s). Re-running with the same rows leaves identical
        tables. Returns the number of rows inserted."""
        self.ensure_schema()
        rows = list(rows)
        day_set = set(days)  # a set: a year's backfill checks ~1e6 rows against 365 days
        for r in rows:
            if r[day_column] not in day_set:
                raise ValueError(f"{table.name}: row for {r[day_column]} outside the replaced days")
        if conn is None:
            with self.engine.begin() as own:
                return self._replace(own, table, days, rows, match or {}, day_column)
        return self._replace(conn, table, days, rows, match or {}, day_column)

    @staticmethod
    def _replace(
        conn: Connection,
        table: Table,
        days: Sequence[date],
        rows: list[Mapping[str, Any]],
        match: Mapping[str, Any],
        day_column: str,
    ) -> int:
        lock_replace(conn, table.name, match)
        day_list = sorted(set(days))
        for i in range(0, len(day_list), _IN_CHUNK):
            chunk = day_list[i : i + _IN_CHUNK]
            conds = [table.c[day_column].in_(chunk)]
            conds += [table.c[k] == v for k, v in match.items()]
            conn.execute(table.delete().where(and_(*conds)))
        if rows:
            insert_rows(conn, table, rows)
        return len(rows)


def lock_replace(conn: Connection, table_name: str, match: Mapping[str, Any]) -> None:
    """Serialize writers replacing days of the same table (and ``match``, e.g. one provider)
    until the transaction ends. PostgreSQL: a transaction-scoped advisory lock keyed by table and
    scope (two runs replacing the same days would otherwise both delete, then one fails on the
    primary key or interleaves). SQLite serializes writers itself (one write lock per file)."""
    if conn.dialect.name != "postgresql":
        return
    scope = "|".join(f"{k}={match[k]}" for k in sorted(match))
    conn.execute(
        select(
            func.pg_advisory_xact_lock(
                cast(_lock_key(f"usage_orchestration:{table_name}"), Integer),
                cast(_lock_key(scope), Integer),
            )
        )
    )


def _lock_key(text: str) -> int:
    """A stable signed 32-bit key (pg_advisory_xact_lock(int, int))."""
    return zlib.crc32(text.encode()) - 2**31


# Rows given by column: each column's values, in row order (all of one length).
Columns = Mapping[str, Sequence[Any]]


def insert_rows(conn: Connection, table: Table, rows: list[Mapping[str, Any]]) -> None:
    """Insert ``rows`` inside ``conn``'s transaction (COPY for large sets on PostgreSQL)."""
    if rows:
        insert_columns(conn, table, by_column(table, rows))


def by_column(table: Table, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``rows`` by column: the columns of ``table`` the first row has, which every row must
    have (a row that lacks one is a bug upstream, refused rather than stored as NULL)."""
    names = [c.name for c in table.columns if c.name in rows[0]]
    try:
        return {name: [r[name] for r in rows] for name in names}
    except KeyError as exc:
        raise ValueError(f"{table.name}: a row lacks the field {exc.args[0]!r}") from None


def check_columns(table: Table, columns: Columns) -> None:
    """Every money and quantity value fits NUMERIC(38, 12), checked before anything is written
    (COPY would fail mid-stream, SQLite would store anything): the error names the table, the
    row's key (provider, account or entity, day) and the field (the first row's first field
    that does not fit)."""
    exact = [
        c.name for c in table.columns if isinstance(c.type, ExactDecimal) and c.name in columns
    ]
    bad: list[tuple[int, int]] = []  # (row, field) of each field's first value that does not fit
    for field, name in enumerate(exact):
        for row, value in enumerate(columns[name]):
            if value is not None and not fits(value) and range_problem(value) is not None:
                bad.append((row, field))
                break
    if not bad:
        return
    row, field = min(bad)
    name = exact[field]
    named = " ".join(f"{k} {columns[k][row] if k in columns else None}" for k in _row_keys(table))
    check_storable(columns[name][row], f"{table.name} {named}", name)


# What names a row to an operator besides its key: the account, the FOCUS row's provider.
_NAMING_COLUMNS = ("billing_account_id", "resource_id", "x_Provider", "BillingAccountId")


def _row_keys(table: Table) -> list[str]:
    """The columns that name a row in an error: its primary key (not the long source key), then
    the account columns it has."""
    keys = [c.name for c in table.primary_key.columns if c.name != "source_key"]
    if "usage_date" in table.c and "usage_date" not in keys:
        keys.append("usage_date")
    return keys + [c for c in _NAMING_COLUMNS if c in table.c and c not in keys]


# Below this many rows a multi-row INSERT is as quick as COPY.
_COPY_MIN_ROWS = 200


def insert_columns(conn: Connection, table: Table, columns: Columns) -> None:
    """Insert rows given by column inside ``conn``'s transaction. On PostgreSQL with psycopg 3,
    large sets go through COPY: the server parses a multi-row INSERT's literals ~7x slower than
    a COPY stream (720 rows: ~20 ms against ~3 ms), which a year's backfill of a provider pays
    per day. On a positional driver (SQLite) each column is bound at once by its type's own bind
    processor and the rows sent in one executemany of the Core INSERT: SQLAlchemy's executemany
    builds and processes a parameter dict per row, which doubled a year's FOCUS insert."""
    n = len(next(iter(columns.values()), ()))
    if n == 0:
        return
    check_columns(table, columns)
    names = list(columns)
    dialect = conn.dialect
    if n >= _COPY_MIN_ROWS and dialect.name == "postgresql" and dialect.driver == "psycopg":
        _copy(conn, table, columns)
        return
    compiled = table.insert().compile(dialect=dialect, column_keys=names)
    order = list(compiled.positiontup or ()) if compiled.positional else []
    if sorted(order) != sorted(names):  # a named paramstyle, or bind names not the columns'
        conn.execute(table.insert(), [dict(zip(names, r, strict=True)) for r in _rows(columns)])
        return
    bound = [_bound(table.c[name].type, columns[name], dialect) for name in order]
    conn.exec_driver_sql(compiled.string, list(zip(*bound, strict=True)))


def _rows(columns: Columns) -> Iterator[tuple[Any, ...]]:
    return zip(*columns.values(), strict=True)


def _bound(type_: TypeEngine[Any], values: Sequence[Any], dialect: Dialect) -> Sequence[Any]:
    """``values`` as the driver takes them: through the type's bind processor, as SQLAlchemy
    does (an exact decimal's text, a day's or a timestamp's, depends on its value alone: each
    distinct one once; a year's load repeats its charge periods and fetch time on every row)."""
    bind = type_.dialect_impl(dialect).bind_processor(dialect)
    if bind is None:
        return values
    if isinstance(type_, ExactDecimal | Date) or (
        # aware timestamps equal as instants may spell different wall times: naive ones only
        isinstance(type_, DateTime) and all(v is None or v.tzinfo is None for v in values)
    ):
        return each_distinct(bind, values)
    return [bind(v) for v in values]


def each_distinct(convert: Callable[[Any], _T], values: Sequence[Any]) -> list[_T]:
    """``[convert(v) for v in values]``, calling ``convert`` once per distinct value: for
    conversions whose result depends on the value alone, over columns whose values repeat."""
    done = {v: convert(v) for v in set(values)}
    return [done[v] for v in values]


def _copy(conn: Connection, table: Table, columns: Columns) -> None:
    from psycopg import sql  # the driver's own identifier quoting: no SQL built from strings

    target = (
        sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    )
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    with dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for r in _rows(columns):
            copy.write_row(r)
