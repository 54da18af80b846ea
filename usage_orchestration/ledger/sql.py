"""The ledger read through SQL (SQLAlchemy Core): every figure is a GROUP BY in the database.

Days are half-open UTC ranges on ``occurred_at`` (``>= D 00:00`` and ``< D+1 00:00``) so the
``ix_usage_event_day`` index is used; raw ``usage_event`` rows never reach Python. Results are
rounded to 6 decimal places (``SCALE``) so that SQLite (which sums NUMERIC as binary floating
point, exact to about 15 significant digits) and PostgreSQL (exact NUMERIC) give identical
Decimals. The ledger is opened read only: SQLite through a ``mode=ro`` URI (a wrong path fails,
it never creates a file), PostgreSQL in read-only transactions (``postgresql_readonly``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Date, Engine, and_, cast, create_engine, func, make_url, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement, Select

from usage_orchestration.core.dates import day_bounds, month_of
from usage_orchestration.ledger.base import (
    CreditPool,
    EntityBudget,
    LedgerDailyUsage,
    LedgerLocation,
    ResourceType,
    SyncStatus,
    check_span,
    in_key_order,
)
from usage_orchestration.ledger.schema import (
    credit_pool,
    entity,
    entity_budget,
    license_sync,
    resource_type,
    usage_event,
)
from usage_orchestration.warehouse.store import make_engine, safe_url

SCALE = Decimal("0.000001")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class LedgerError(RuntimeError):
    """The ledger cannot be read (unreachable, schema missing, bad request). Names the backend,
    the (password-free) location and what was being read."""


class CreditPoolNotConfigured(LedgerError):
    """The ledger holds no included credits for the month (nor an earlier one): not configured,
    which budget_status reports for that month instead of failing. SQL: no credit_pool row for
    the month or before; the Usage API: ``creditPool`` present and null."""


def q(value: Any) -> Decimal:
    """A database number as a Decimal rounded to ``SCALE`` (None → 0)."""
    if value is None:
        return Decimal(0).quantize(SCALE)
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    return value.quantize(SCALE)


def check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise ValueError(f"ledger: month must be YYYY-MM, got {month!r}")
    return month


def readonly_engine(url: str) -> Engine:
    """An engine that cannot write the ledger. SQLite files open with ``mode=ro`` (missing
    file: an error, not a new empty ledger); on PostgreSQL every transaction of the engine is
    ``READ ONLY``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return make_engine(url).execution_options(postgresql_readonly=True)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return make_engine(url)
    uri = Path(str(parsed.database)).resolve().as_uri() + "?mode=ro"

    def connect() -> sqlite3.Connection:
        # timeout: wait for the platform's writer instead of failing on a locked database
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=60)

    return create_engine("sqlite://", creator=connect)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


class SqlLedger(LedgerLocation):
    """``LedgerReader`` over the ledger database at ``url`` (read only)."""

    backend = "sql"

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or readonly_engine(url)
        self.dialect = self.engine.dialect.name

    @property
    def location(self) -> str:
        return safe_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _connect(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn = conn.execution_options(postgresql_readonly=True)
                yield conn
        except DBAPIError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise LedgerError(
                f"ledger (sql {safe_url(self.url)}): cannot read {what}: {detail}"
            ) from None

    def _day_expr(self) -> ColumnElement[Any]:
        col = usage_event.c.occurred_at
        if self.dialect == "postgresql":
            return func.date(func.timezone("UTC", col))
        if self.dialect == "sqlite":
            return func.date(col)
        return cast(col, Date)

    def _month_expr(self) -> ColumnElement[Any]:
        col = usage_event.c.occurred_at
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", col), "YYYY-MM")
        if self.dialect == "sqlite":
            return func.strftime("%Y-%m", col)
        return func.substr(cast(col, Date), 1, 7)

    @staticmethod
    def _in_days(start: date, end_inclusive: date) -> ColumnElement[bool]:
        lo, hi = day_bounds(start, end_inclusive)
        return and_(usage_event.c.occurred_at >= lo, usage_event.c.occurred_at < hi)

    def _summed(
        self,
        start: date,
        end_inclusive: date,
        keys: Sequence[ColumnElement[Any]],
        what: str,
        *,
        events: bool = False,
    ) -> Sequence[Row[Any]]:
        """``usage_event`` of the days grouped by ``keys``: their ``credits`` summed and, with
        ``events``, their ``events`` counted."""
        totals: list[ColumnElement[Any]] = [func.sum(usage_event.c.credits).label("credits")]
        if events:
            totals.append(func.count().label("events"))
        stmt = select(*keys, *totals).where(self._in_days(start, end_inclusive)).group_by(*keys)
        with self._connect(what) as conn:
            return conn.execute(stmt).all()

    @staticmethod
    def daily_usage_query(day: date) -> Select[Any]:
        """The one-day aggregate (also what the benchmark times as the bare GROUP BY)."""
        e = usage_event.c
        return (
            select(
                e.entity_id,
                e.entity_type,
                e.resource_type,
                e.unit,
                func.sum(e.quantity).label("quantity"),
                func.sum(e.credits).label("credits"),
                func.count().label("events"),
            )
            .where(SqlLedger._in_days(day, day))
            .group_by(e.entity_id, e.entity_type, e.resource_type, e.unit)
        )

    # -- LedgerReader -----------------------------------------------------------------------
    def daily_usage(self, day: date) -> list[LedgerDailyUsage]:
        with self._connect(f"usage of {day.isoformat()}") as conn:
            rows = conn.execute(self.daily_usage_query(day)).all()
        return in_key_order(
            LedgerDailyUsage.of(
                day,
                r,
                unit=r.unit,
                quantity=None if r.quantity is None else q(r.quantity),
                credits=q(r.credits),
                events=int(r.events),
            )
            for r in rows
        )

    def credits_by_day(
        self, start: date, end_inclusive: date
    ) -> list[tuple[date, str, str, str, Decimal]]:
        check_span(start, end_inclusive, "credits_by_day")
        e = usage_event.c
        rows = self._summed(
            start,
            end_inclusive,
            (self._day_expr().label("day"), e.entity_id, e.entity_type, e.resource_type),
            f"credits of {start.isoformat()}..{end_inclusive.isoformat()}",
        )
        out = [
            (_as_date(r.day), r.entity_id, r.entity_type, r.resource_type, q(r.credits))
            for r in rows
        ]
        out.sort(key=lambda t: (t[0], t[1], t[3]))
        return out

    def budgets(self, month: str) -> list[EntityBudget]:
        """Per entity, the latest budget set for ``month`` or an earlier month (a budget stays in
        force until changed), so an old month always shows the budgets of that month."""
        check_month(month)
        b = entity_budget
        latest = (
            select(b.c.entity_id, func.max(b.c.month).label("month"))
            .where(b.c.month <= month)
            .group_by(b.c.entity_id)
            .subquery()
        )
        stmt = (
            select(b.c.entity_id, b.c.monthly_budget, entity.c.entity_type, entity.c.name)
            .join(latest, and_(b.c.entity_id == latest.c.entity_id, b.c.month == latest.c.month))
            .outerjoin(entity, entity.c.id == b.c.entity_id)
            .order_by(b.c.entity_id)
        )
        with self._connect(f"budgets of {month}") as conn:
            rows = conn.execute(stmt).all()
        return [
            EntityBudget(
                entity_id=r.entity_id,
                entity_type=r.entity_type or "",
                name=r.name,
                monthly_budget=q(r.monthly_budget),
            )
            for r in rows
        ]

    def credit_pool(self, as_of: date) -> CreditPool:
        """Included credits in force in ``as_of``'s month; used = credits from the 1st of that
        month through ``as_of`` (later ledger rows never count)."""
        month = month_of(as_of)
        inc_stmt = (
            select(credit_pool.c.included)
            .where(credit_pool.c.month <= month)
            .order_by(credit_pool.c.month.desc())
            .limit(1)
        )
        used_stmt = select(func.sum(usage_event.c.credits)).where(
            self._in_days(as_of.replace(day=1), as_of)
        )
        with self._connect(f"credit pool as of {as_of.isoformat()}") as conn:
            included = conn.execute(inc_stmt).scalar()
            used = conn.execute(used_stmt).scalar()
        if included is None:
            raise CreditPoolNotConfigured(
                f"ledger (sql {safe_url(self.url)}): credit_pool has no included credits for "
                f"{month} or an earlier month"
            )
        inc, u = q(included), q(used)
        return CreditPool(included=inc, used=u, remaining=inc - u)

    def sync_status(self) -> SyncStatus:
        stmt = select(license_sync).order_by(license_sync.c.id.desc()).limit(1)
        with self._connect("license sync status") as conn:
            row = conn.execute(stmt).first()
        return SyncStatus() if row is None else SyncStatus.of(row)

    def resource_types(self) -> list[ResourceType]:
        with self._connect("resource types") as conn:
            rows = conn.execute(select(resource_type).order_by(resource_type.c.slug)).all()
        return [ResourceType(**dict(r._mapping)) for r in rows]

    # -- extra aggregates (the sandbox's Usage Reporting API is built on these) --------------
    def entities(self) -> dict[str, dict[str, Any]]:
        with self._connect("entities") as conn:
            rows = conn.execute(select(entity)).all()
        return {r.id: dict(r._mapping) for r in rows}

    def usage_summary(self, start: date, end_inclusive: date) -> list[dict[str, Any]]:
        """Per (entity, resource type) over the days: credits and events."""
        e = usage_event.c
        rows = self._summed(
            start,
            end_inclusive,
            (e.entity_id, e.entity_type, e.resource_type),
            f"usage summary {start}..{end_inclusive}",
            events=True,
        )
        out = [
            {
                "entity_id": r.entity_id,
                "entity_type": r.entity_type,
                "resource_type": r.resource_type,
                "credits": q(r.credits),
                "events": int(r.events),
            }
            for r in rows
        ]
        out.sort(key=lambda d: (d["entity_id"], d["resource_type"]))
        return out

    def daily_totals(self, start: date, end_inclusive: date) -> list[tuple[date, str, Decimal]]:
        """Per (day, resource type): credits."""
        rows = self._summed(
            start,
            end_inclusive,
            (self._day_expr().label("day"), usage_event.c.resource_type),
            f"daily totals {start}..{end_inclusive}",
        )
        return sorted((_as_date(r.day), r.resource_type, q(r.credits)) for r in rows)

    def monthly_history(
        self, start: date, end_inclusive: date
    ) -> list[tuple[str, str, Decimal, int]]:
        """Per (month, resource type): credits and events."""
        rows = self._summed(
            start,
            end_inclusive,
            (self._month_expr().label("month"), usage_event.c.resource_type),
            f"monthly history {start}..{end_inclusive}",
            events=True,
        )
        return sorted((str(r.month), r.resource_type, q(r.credits), int(r.events)) for r in rows)

    def top_actors(self, start: date, end_inclusive: date, limit: int) -> list[dict[str, Any]]:
        e = usage_event.c
        credits = func.sum(e.credits).label("credits")
        stmt = (
            select(e.actor, e.actor_type, credits, func.count().label("events"))
            .where(self._in_days(start, end_inclusive))
            .group_by(e.actor, e.actor_type)
            .order_by(credits.desc(), e.actor)
            .limit(limit)
        )
        with self._connect(f"top actors {start}..{end_inclusive}") as conn:
            rows = conn.execute(stmt).all()
        return [
            {
                "actor": r.actor,
                "actor_type": r.actor_type,
                "credits": q(r.credits),
                "events": int(r.events),
            }
            for r in rows
        ]
