"""The SQL around reconciliation and budgets: aggregate in the database, write results atomically.

Everything here groups in SQL (SQLAlchemy Core, bound parameters) and returns small aggregates;
the comparisons themselves are the pure functions of ``reconcile.py`` and ``budgets.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select

from usage_orchestration.core.reconcile import (
    CoverageAccount,
    CoverageEntry,
    ProviderAggregate,
    ReconcileConfig,
    ReconciliationRow,
    missing_accounts,
    reconcile_day,
)
from usage_orchestration.ledger.base import LedgerDailyUsage
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.analysis_schema import usage_reconciliation
from usage_orchestration.warehouse.schema import (
    ledger_daily_usage,
    provider_coverage,
    provider_usage,
)
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration.warehouse.types import exact_sum

_IN_CHUNK = 500


def _dec(v: Any) -> Decimal:
    if v is None:
        return Decimal(0)
    return v if isinstance(v, Decimal) else Decimal(str(v))


def _chunks(days: Sequence[date]) -> Iterable[list[date]]:
    ordered = sorted(set(days))
    for i in range(0, len(ordered), _IN_CHUNK):
        yield ordered[i : i + _IN_CHUNK]


def provider_aggregates(
    warehouse: Warehouse, days: Sequence[date], providers: Sequence[str]
) -> dict[date, list[ProviderAggregate]]:
    """provider_usage summed per (day, provider, resource, sub-account, metric, unit), in SQL.

    Grouping by resource (not by the mapping stored at load time) lets the current settings'
    mapping decide, so a corrected mapping applies on the next reconciliation.
    """
    t = provider_usage
    out: dict[date, list[ProviderAggregate]] = defaultdict(list)
    if not providers:
        return out
    cols = (
        t.c.usage_date,
        t.c.provider,
        t.c.resource_id,
        t.c.sub_account_id,
        t.c.metric,
        t.c.consumed_unit,
    )
    with warehouse.engine.connect() as conn:
        for chunk in _chunks(days):
            stmt = (
                select(*cols, exact_sum(t.c.consumed_quantity), func.count())
                .where(t.c.usage_date.in_(chunk), t.c.provider.in_(list(providers)))
                .group_by(*cols)
            )
            for d, p, rid, sub, metric, unit, qty, n in conn.execute(stmt):
                out[d].append(ProviderAggregate(d, p, rid, sub, metric, unit, _dec(qty), int(n)))
    return out


def coverage_entries(warehouse: Warehouse, days: Sequence[date]) -> dict[date, list[CoverageEntry]]:
    t = provider_coverage
    out: dict[date, list[CoverageEntry]] = defaultdict(list)
    with warehouse.engine.connect() as conn:
        for chunk in _chunks(days):
            stmt = select(
                t.c.usage_date, t.c.provider, t.c.account_id, t.c.status, t.c.reason
            ).where(t.c.usage_date.in_(chunk))
            for d, p, a, s, reason in conn.execute(stmt):
                out[d].append(CoverageEntry(p, a, s, reason))
    return out


def ledger_aggregates(
    warehouse: Warehouse, days: Sequence[date]
) -> dict[date, list[LedgerDailyUsage]]:
    """The ledger's daily aggregate as materialized by ``ledger_daily_usage`` (already grouped
    per day, entity, resource type and unit). An empty ``unit`` means the backend could not tell
    quantities (HTTP API): credits are compared instead."""
    t = ledger_daily_usage
    out: dict[date, list[LedgerDailyUsage]] = defaultdict(list)
    with warehouse.engine.connect() as conn:
        for chunk in _chunks(days):
            stmt = select(
                t.c.usage_date,
                t.c.entity_id,
                t.c.entity_type,
                t.c.resource_type,
                t.c.unit,
                t.c.quantity,
                t.c.credits,
                t.c.events,
            ).where(t.c.usage_date.in_(chunk))
            for d, eid, etype, rt, unit, qty, credits, events in conn.execute(stmt):
                known = bool(unit) and qty is not None
                out[d].append(
                    LedgerDailyUsage(
                        usage_date=d,
                        entity_id=eid,
                        entity_type=etype,
                        resource_type=rt,
                        unit=unit if known else None,
                        quantity=_dec(qty) if known else None,
                        credits=_dec(credits),
                        events=int(events or 0),
                    )
                )
    return out


def reconcile_days(
    warehouse: Warehouse, days: Sequence[date], config: ReconcileConfig
) -> dict[date, list[ReconciliationRow]]:
    """Reconcile every day of ``days`` from the warehouse (three grouped queries per 500 days)."""
    prov = provider_aggregates(warehouse, days, config.providers)
    led = ledger_aggregates(warehouse, days)
    cov = coverage_entries(warehouse, days)
    return {
        d: reconcile_day(d, prov.get(d, []), led.get(d, []), cov.get(d, []), config)
        for d in sorted(set(days))
    }


def write_reconciliation(
    warehouse: Warehouse, days: Sequence[date], rows: Iterable[ReconciliationRow], load_id: str
) -> int:
    """Replace the reconciliation of ``days`` in one transaction."""
    return warehouse.replace_days(usage_reconciliation, days, [r.record(load_id) for r in rows])


def provider_daily_quantity(
    warehouse: Warehouse, provider: str, metric: str, unit: str, start: date, end_inclusive: date
) -> tuple[dict[date, Decimal], set[date], set[str]]:
    """Per day: ``provider``'s ``metric`` in ``unit`` over [start, end]; the days with complete
    coverage; and any other units the metric was reported in (so a cap never silently ignores
    them)."""
    t = provider_usage
    c = provider_coverage
    span = and_(t.c.usage_date >= start, t.c.usage_date <= end_inclusive)
    with warehouse.engine.connect() as conn:
        q = conn.execute(
            select(t.c.usage_date, t.c.consumed_unit, exact_sum(t.c.consumed_quantity))
            .where(span, t.c.provider == provider, t.c.metric == metric)
            .group_by(t.c.usage_date, t.c.consumed_unit)
        ).all()
        complete_days = {
            d
            for (d,) in conn.execute(
                select(c.c.usage_date)
                .where(
                    c.c.usage_date >= start,
                    c.c.usage_date <= end_inclusive,
                    c.c.provider == provider,
                )
                .group_by(c.c.usage_date)
                .having(func.sum(case((c.c.status == "complete", 0), else_=1)) == 0)
            )
        }
    daily: dict[date, Decimal] = {}
    other_units: set[str] = set()
    for d, u, qty in q:
        if u == unit:
            daily[d] = daily.get(d, Decimal(0)) + _dec(qty)
        else:
            other_units.add(u)
    return daily, complete_days, other_units


def write_rows(
    warehouse: Warehouse,
    tables: Mapping[Any, tuple[Sequence[date], Sequence[Mapping[str, Any]], str]],
) -> dict[str, int]:
    """Replace several tables' days in ONE transaction: {table: (days, rows, day_column)}."""
    warehouse.ensure_schema()
    written: dict[str, int] = {}
    with warehouse.engine.begin() as conn:
        for table, (days, rows, day_column) in tables.items():
            written[table.name] = warehouse.replace_days(
                table, days, rows, day_column=day_column, conn=conn
            )
    return written


def caps_month_to_date(
    warehouse: Warehouse, settings: UsageSettings, provider: str, as_of: date
) -> list[dict[str, Any]]:
    """Per configured cap of ``provider`` (e.g. Forge's free 100,000 GB-seconds of function
    compute): the month's usage through ``as_of`` against the allowance, summed in SQL."""
    out: list[dict[str, Any]] = []
    month_start = as_of.replace(day=1)
    for cap in settings.budgets.provider_caps:
        if cap.provider != provider:
            continue
        daily, _covered, _others = provider_daily_quantity(
            warehouse, provider, cap.metric, cap.unit, month_start, as_of
        )
        used = sum(daily.values(), Decimal(0))
        out.append(
            {
                "metric": cap.metric,
                "unit": cap.unit,
                "month": month_start.strftime("%Y-%m"),
                "through": as_of.isoformat(),
                "used": used,
                "allowance": cap.monthly_quantity,
                "used_pct": (used * 100 / cap.monthly_quantity).quantize(Decimal("0.01")),
            }
        )
    return out


@dataclass(frozen=True)
class Completeness:
    """Per day, the configured accounts with no coverage row; how many account-days were
    fetched as unavailable."""

    missing: dict[date, list[str]]
    unavailable: int


def completeness(
    warehouse: Warehouse, days: Sequence[date], expected: Mapping[str, Sequence[CoverageAccount]]
) -> Completeness:
    cov = coverage_entries(warehouse, days)
    missing: dict[date, list[str]] = {}
    unavailable = 0
    for d in days:
        gaps = missing_accounts(expected, cov.get(d, []))
        if gaps:
            missing[d] = gaps
        unavailable += sum(1 for c in cov.get(d, []) if c.status == "unavailable")
    return Completeness(missing, unavailable)
