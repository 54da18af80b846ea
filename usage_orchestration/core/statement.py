"""The monthly statement: per entity and per provider, a month's usage, credits, breaks, budget
and forecast, and whether the month is closed. Pure.

The inputs are what the warehouse returns for the month (``warehouse/statement.py`` aggregates
in SQL): every ``budget_status`` day of the month, the reconciliation summed per entity,
provider and resource type, its breaks per status, and the provider caps of the last day. The
figures of an entity are those of ``budget_status`` on the month's last materialized day
(``as_of``), so the statement never disagrees with the budgets it summarizes.

A month closes once its late-data window has passed: ``closed`` when now ≥ the first instant of
the next month (UTC) + ``late_days`` days. Before that the statement is provisional.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from usage_orchestration.core.budgets import (
    BudgetRow,  # one budget_status row
    ProviderCapRow,  # one provider_cap_status row: a provider allowance as of a day
)
from usage_orchestration.core.dates import (
    days_in_month,
    month_end,
    month_of,
    month_start,
    next_month,
    utc_midnight,
)
from usage_orchestration.core.money import CREDITS_QUANTUM, exact_add, format_credits, quantize

ENTITY_LINE = "all"  # the provider of an entity's own line (budget figures, totals)
MATCHED = "matched"  # the one reconciliation status that is not a break


@dataclass(frozen=True)
class ProviderLine:
    """The month's reconciliation of one entity, provider and resource type, summed."""

    entity_id: str  # "" for usage mapped to no entity
    provider: str
    resource_type: str
    ledger_unit: str | None
    usage_quantity: Decimal | None  # the provider's usage in the ledger's unit (expected)
    # None: no row of the line carried the figure (unmapped usage has no expected credits; an
    # unavailable day is not compared), never a zero standing in for unknown
    expected_credits: Decimal | None
    credits_charged: Decimal | None  # what the ledger recorded
    delta_credits: Decimal | None  # charged - expected; < 0 is a leak
    days: int


@dataclass(frozen=True)
class BreakLine:
    """Reconciliation rows of one status that is not ``matched``, and their summed delta."""

    entity_id: str
    provider: str
    resource_type: str
    status: str
    rows: int
    delta_credits: Decimal | None  # None: rows not compared (e.g. unmapped usage)


@dataclass(frozen=True)
class BurnDown:
    """What the plot draws: cumulative actual credits per materialized day, the budget, and the
    forecast from the last day to month end at the forecast's rate."""

    days_in_month: int
    budget: Decimal | None
    actual: list[tuple[date, Decimal]]
    forecast: list[tuple[date, Decimal]]


@dataclass(frozen=True)
class EntityStatement:
    entity_id: str
    entity_name: str | None
    entity_type: str | None
    budget: BudgetRow | None  # the as_of day's budget_status row (None: no row that day)
    lines: list[ProviderLine]
    breaks: list[BreakLine]
    burn_down: BurnDown

    @property
    def label(self) -> str:
        if not self.entity_id:
            return "(unmapped usage)"
        return f"{self.entity_name} ({self.entity_id})" if self.entity_name else self.entity_id

    @property
    def expected_credits(self) -> Decimal | None:
        return _total(line.expected_credits for line in self.lines)

    @property
    def credits_charged(self) -> Decimal | None:
        return _total(line.credits_charged for line in self.lines)

    @property
    def delta_credits(self) -> Decimal | None:
        return _total(line.delta_credits for line in self.lines)


@dataclass(frozen=True)
class Statement:
    month: date  # the first day
    as_of: date | None  # the last materialized budget day of the month (None: none yet)
    closed: bool
    closes_at: datetime
    late_days: int
    days_materialized: int
    entities: list[EntityStatement]
    caps: list[ProviderCapRow] = field(default_factory=list)

    @property
    def month_key(self) -> str:
        return month_of(self.month)

    @property
    def state(self) -> str:
        return "closed" if self.closed else "provisional"

    def breaks_by_status(self) -> dict[str, tuple[int, Decimal | None]]:
        """Every entity's breaks per status: (rows, summed delta; None when none compared)."""
        return _per_status(b for e in self.entities for b in e.breaks)

    def records(self, load_id: str) -> list[dict[str, Any]]:
        """The ``monthly_statement`` rows: per entity its own line (provider ``all``: budget
        figures and totals), then one per provider and resource type."""
        out: list[dict[str, Any]] = []
        common = {
            "month": self.month_key,
            "as_of_date": self.as_of,
            "closed": self.closed,
            "load_id": load_id,
        }
        for e in self.entities:
            b = e.budget
            out.append(
                {
                    **common,
                    "entity_id": e.entity_id,
                    "entity_name": e.entity_name,
                    "entity_type": e.entity_type,
                    "provider": ENTITY_LINE,
                    "resource_type": "",
                    "ledger_unit": None,
                    "usage_quantity": None,  # units differ across resource types
                    "expected_credits": e.expected_credits,
                    "credits_charged": e.credits_charged,
                    "delta_credits": e.delta_credits,
                    **_break_fields(e.breaks),
                    "credits_used": b.credits_used if b else None,
                    "monthly_budget": b.monthly_budget if b else None,
                    "budget_percent": b.budget_percent if b else None,
                    "budget_remaining": b.budget_remaining if b else None,
                    "over_budget": b.over_budget if b else None,
                    "forecast_month_end": b.forecast_month_end if b else None,
                    "forecast_percent": b.forecast_percent if b else None,
                    "forecast_overrun": b.forecast_overrun if b else None,
                    "days_of_data": b.days_of_data if b else None,
                }
            )
            for line in e.lines:
                mine = [
                    x
                    for x in e.breaks
                    if (x.provider, x.resource_type) == (line.provider, line.resource_type)
                ]
                out.append(
                    {
                        **common,
                        "entity_id": e.entity_id,
                        "entity_name": e.entity_name,
                        "entity_type": e.entity_type,
                        "provider": line.provider,
                        "resource_type": line.resource_type,
                        "ledger_unit": line.ledger_unit,
                        "usage_quantity": line.usage_quantity,
                        "expected_credits": line.expected_credits,
                        "credits_charged": line.credits_charged,
                        "delta_credits": line.delta_credits,
                        **_break_fields(mine),
                        **dict.fromkeys(_BUDGET_FIELDS),
                    }
                )
        return out

    def break_records(self, load_id: str) -> list[dict[str, Any]]:
        """The ``monthly_statement_break`` rows: per entity, provider, resource type, status."""
        return [
            {
                "month": self.month_key,
                "entity_id": b.entity_id,
                "provider": b.provider,
                "resource_type": b.resource_type,
                "status": b.status,
                "row_count": b.rows,
                "delta_credits": b.delta_credits,
                "load_id": load_id,
            }
            for e in self.entities
            for b in e.breaks
        ]


_BUDGET_FIELDS = (
    "credits_used",
    "monthly_budget",
    "budget_percent",
    "budget_remaining",
    "over_budget",
    "forecast_month_end",
    "forecast_percent",
    "forecast_overrun",
    "days_of_data",
)

# The columns of the CSV and of the UI's table, in order.
STATEMENT_COLUMNS = (
    "month",
    "as_of_date",
    "closed",
    "entity_id",
    "entity_name",
    "entity_type",
    "provider",
    "resource_type",
    "ledger_unit",
    "usage_quantity",
    "expected_credits",
    "credits_charged",
    "delta_credits",
    "break_rows",
    "break_delta_credits",
    "breaks",
    *_BUDGET_FIELDS,
)


def _total(values: Iterable[Decimal | None]) -> Decimal | None:
    """The exact sum of the known values; None when none is known."""
    t: Decimal | None = None
    for v in values:
        if v is not None:
            t = v if t is None else exact_add(t, v)
    return t


def _per_status(breaks: Iterable[BreakLine]) -> dict[str, tuple[int, Decimal | None]]:
    per: dict[str, tuple[int, Decimal | None]] = {}
    for b in breaks:
        n, d = per.get(b.status, (0, None))
        per[b.status] = (n + b.rows, _total((d, b.delta_credits)))
    return dict(sorted(per.items()))


def _break_fields(breaks: Sequence[BreakLine]) -> dict[str, Any]:
    per = _per_status(breaks)
    return {
        "break_rows": sum(n for n, _ in per.values()),
        "break_delta_credits": _total(d for _, d in per.values()),
        # e.g. "ledger_under 3 (-12.50); missing_in_ledger 1 (-4.00)"
        "breaks": "; ".join(f"{s} {n} ({format_credits(d)})" for s, (n, d) in per.items()),
    }


def closes_at(month: date, late_days: int) -> datetime:
    """When ``month``'s statement closes: the next month's first instant (UTC) + the window."""
    return utc_midnight(next_month(month)) + timedelta(days=late_days)


def is_closed(month: date, now: datetime, late_days: int) -> bool:
    """True once the late-data window after the month has passed (``now`` aware, any zone)."""
    return now >= closes_at(month, late_days)


def burn_down(month: date, days: Sequence[BudgetRow]) -> BurnDown:
    """One entity's plot series from its ``budget_status`` rows of the month (any order). The
    forecast runs in a straight line from the last day's credits to its month-end forecast:
    the run rate (used ÷ days elapsed) is that line's slope."""
    ordered = sorted(days, key=lambda d: d.as_of_date)
    dim = days_in_month(month)
    actual = [(d.as_of_date, d.credits_used) for d in ordered]
    forecast: list[tuple[date, Decimal]] = []
    last = ordered[-1] if ordered else None
    if last is not None and last.forecast_month_end is not None:
        end = month_end(month)
        span = (end - last.as_of_date).days
        rise = last.forecast_month_end - last.credits_used
        for i in range(span + 1):
            value = last.credits_used + (rise * i / span if span else rise)
            forecast.append(
                (last.as_of_date + timedelta(days=i), quantize(value, CREDITS_QUANTUM) or value)
            )
    return BurnDown(
        days_in_month=dim,
        budget=last.monthly_budget if last else None,
        actual=actual,
        forecast=forecast,
    )


def build_statement(
    month: date,
    budget_days: Iterable[BudgetRow],
    lines: Iterable[ProviderLine],
    breaks: Iterable[BreakLine],
    caps: Iterable[ProviderCapRow],
    *,
    now: datetime,
    late_days: int,
) -> Statement:
    """The statement of ``month`` from the warehouse's rows for it.

    An entity appears if it has a ``budget_status`` row on the month's last materialized day or
    any reconciliation in the month; its budget figures are that day's row, unchanged."""
    first = month_start(month)
    in_month = [b for b in budget_days if month_start(b.as_of_date) == first]
    as_of = max((b.as_of_date for b in in_month), default=None)
    per_entity: dict[str, list[BudgetRow]] = defaultdict(list)
    for b in in_month:
        per_entity[b.entity_id].append(b)
    latest = {b.entity_id: b for b in in_month if b.as_of_date == as_of}
    lines_of: dict[str, list[ProviderLine]] = defaultdict(list)
    for line in lines:
        lines_of[line.entity_id].append(line)
    breaks_of: dict[str, list[BreakLine]] = defaultdict(list)
    for x in breaks:
        if x.status != MATCHED:
            breaks_of[x.entity_id].append(x)
    ids = sorted(set(latest) | set(lines_of) | set(breaks_of), key=lambda e: (e == "", e))
    entities: list[EntityStatement] = []
    for eid in ids:
        b = latest.get(eid)
        # an entity's name is the ledger's, from its latest budget row that month
        named = sorted(per_entity.get(eid, []), key=lambda d: d.as_of_date)
        name = next((d.entity_name for d in reversed(named) if d.entity_name), None)
        etype = next((d.entity_type for d in reversed(named) if d.entity_type), None)
        entities.append(
            EntityStatement(
                entity_id=eid,
                entity_name=name,
                entity_type=etype,
                budget=b,
                lines=sorted(lines_of.get(eid, []), key=lambda x: (x.provider, x.resource_type)),
                breaks=sorted(
                    breaks_of.get(eid, []), key=lambda x: (x.provider, x.resource_type, x.status)
                ),
                burn_down=burn_down(first, per_entity.get(eid, [])),
            )
        )
    return Statement(
        month=first,
        as_of=as_of,
        closed=is_closed(first, now, late_days),
        closes_at=closes_at(first, late_days),
        late_days=late_days,
        days_materialized=len({b.as_of_date for b in in_month}),
        entities=entities,
        caps=sorted(caps, key=lambda c: (c.provider, c.metric, c.unit)),
    )
