"""Budgets, forecasts, the credit pool, provider caps and anomalies, as of a day D. Pure.

Every function takes aggregates (credits per day and entity, budgets in force, the pool) and
returns rows; nothing here reads a database. History is stable because callers pass only what
the ledger held through D, and every function also ignores anything dated after D.

Rules (docs/reconciliation.md explains them for finance):
- month to date = the month of D, from its first day through D (UTC days);
- run-rate forecast = used ÷ days elapsed (D's day of month) × days in the month, only once the
  ledger holds ``forecast_min_days`` days of data in the month;
- thresholds crossed = every configured percent ≤ credits used ÷ monthly budget × 100;
- anomaly = a day's credits per entity and resource type against the mean of the trailing
  ``baseline_days`` days that hold ledger data, judged when at least ``min_baseline_days`` do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from usage_orchestration.core.dates import days_in_month, month_end, month_of, month_start
from usage_orchestration.core.money import CREDITS_QUANTUM, quantize
from usage_orchestration.ledger.base import CreditPool, EntityBudget

_M = CREDITS_QUANTUM  # stored money/quantities: the storage scale (core/money.py)
_PCT = Decimal("0.01")

DailyCredits = tuple[
    date, str, str, str, Decimal
]  # (day, entity_id, entity_type, resource_type, credits)


def _m(x: Decimal | None) -> Decimal | None:
    return quantize(x, _M)


def _pct(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if whole == 0 else (part / whole * 100).quantize(_PCT)


def run_rate_forecast(
    used: Decimal, as_of: date, days_of_data: int, min_days: int
) -> Decimal | None:
    """Month-end total at the month's run rate: used ÷ days elapsed × days in month; None until
    ``min_days`` days of data exist."""
    if days_of_data < min_days:
        return None
    return used / as_of.day * days_in_month(as_of)


def thresholds_crossed(percent: Decimal | None, thresholds: Sequence[Decimal]) -> list[Decimal]:
    if percent is None:
        return []
    return [t for t in sorted(thresholds) if percent >= t]


def exhaustion_date(remaining: Decimal, daily_rate: Decimal | None, as_of: date) -> date | None:
    """The first day whose end sees ``remaining`` used up at ``daily_rate`` (as_of when already
    used up); None without a positive rate."""
    if remaining <= 0:
        return as_of
    if daily_rate is None or daily_rate <= 0:
        return None
    days = int((remaining / daily_rate).to_integral_value(rounding=ROUND_CEILING))
    return as_of + timedelta(days=days)


def _fmt_thresholds(ts: Sequence[Decimal]) -> str:
    return ",".join(format(t.normalize(), "f") for t in ts)


@dataclass(frozen=True)
class BudgetRow:
    as_of_date: date
    month: str
    entity_id: str
    entity_type: str | None
    entity_name: str | None
    credits_used: Decimal
    monthly_budget: Decimal | None
    budget_percent: Decimal | None
    budget_remaining: Decimal | None
    over_budget: bool
    highest_threshold_crossed: Decimal | None
    thresholds_crossed: str
    days_of_data: int
    days_elapsed: int
    days_in_month: int
    forecast_month_end: Decimal | None
    forecast_percent: Decimal | None
    forecast_overrun: Decimal | None
    # configured: a budget is in force for the entity; no_budget: the month has budgets, not for
    # this entity; not_configured: the ledger holds no budget at all for the month
    budget_state: BudgetState = "configured"

    def record(self, load_id: str) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "load_id": load_id}


BudgetState = Literal["configured", "no_budget", "not_configured"]
NOT_CONFIGURED: BudgetState = "not_configured"


def _in_month(credits: Iterable[DailyCredits], as_of: date) -> list[DailyCredits]:
    first = month_start(as_of)
    return [c for c in credits if first <= c[0] <= as_of]


def budget_status(
    as_of: date,
    credits: Iterable[DailyCredits],
    budgets: Iterable[EntityBudget],
    *,
    thresholds: Sequence[Decimal] = (Decimal(50), Decimal(80), Decimal(100)),
    forecast_min_days: int = 3,
) -> list[BudgetRow]:
    """One row per entity with a budget in ``as_of``'s month or with credits in it.

    ``credits`` may span more than the month: only [month start, as_of] counts. ``days_of_data``
    is the number of days of the month (through as_of) on which the ledger holds any usage.
    Without any budget for the month, every row is ``not_configured`` (credits and forecast
    still computed, nothing over budget): a month before budgets were set is not an error.
    """
    month_rows = _in_month(credits, as_of)
    data_days = {c[0] for c in month_rows}
    used: dict[str, Decimal] = defaultdict(lambda: Decimal(0))
    types: dict[str, str] = {}
    for _d, eid, etype, _rt, cr in month_rows:
        used[eid] += cr
        types.setdefault(eid, etype)
    by_entity = {b.entity_id: b for b in budgets}
    month_state: BudgetState = "no_budget" if by_entity else NOT_CONFIGURED
    return [
        _entity_row(
            as_of,
            eid,
            by_entity.get(eid),
            used.get(eid, Decimal(0)),
            types.get(eid),
            len(data_days),
            month_state,
            thresholds,
            forecast_min_days,
        )
        for eid in sorted(set(used) | set(by_entity))
    ]


def _entity_row(
    as_of: date,
    eid: str,
    b: EntityBudget | None,
    spent: Decimal,
    ledger_type: str | None,
    data_days: int,
    month_state: BudgetState,
    thresholds: Sequence[Decimal],
    forecast_min_days: int,
) -> BudgetRow:
    """One entity's month to date: its spend against its budget (if any) and the forecast."""
    budget = b.monthly_budget if b else None
    pct = _pct(spent, budget) if budget is not None else None
    crossed = thresholds_crossed(pct, thresholds)
    if budget is not None and budget == 0 and spent > 0:
        crossed = sorted(thresholds)  # any spend against a zero budget crosses everything
    forecast = run_rate_forecast(spent, as_of, data_days, forecast_min_days)
    overrun = None
    if forecast is not None and budget is not None and forecast > budget:
        overrun = forecast - budget
    return BudgetRow(
        as_of_date=as_of,
        month=month_of(as_of),
        entity_id=eid,
        entity_type=(b.entity_type if b else None) or ledger_type,
        entity_name=b.name if b else None,
        credits_used=_m(spent) or Decimal(0),
        monthly_budget=_m(budget),
        budget_percent=pct,
        budget_remaining=_m(budget - spent) if budget is not None else None,
        over_budget=budget is not None and spent > budget,
        highest_threshold_crossed=crossed[-1] if crossed else None,
        thresholds_crossed=_fmt_thresholds(crossed),
        days_of_data=data_days,
        days_elapsed=as_of.day,
        days_in_month=days_in_month(as_of),
        forecast_month_end=_m(forecast),
        forecast_percent=_pct(forecast, budget) if forecast is not None and budget else None,
        forecast_overrun=_m(overrun),
        budget_state="configured" if b else month_state,
    )


@dataclass(frozen=True)
class CreditPoolRow:
    as_of_date: date
    month: str
    included: Decimal
    used: Decimal
    remaining: Decimal
    percent_used: Decimal | None
    days_of_data: int
    daily_run_rate: Decimal | None
    forecast_month_end_used: Decimal | None
    forecast_remaining: Decimal | None
    projected_depletion_date: date | None  # within the month only: the pool is monthly
    depleted: bool

    def record(self, load_id: str) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "load_id": load_id}


def credit_pool_status(
    as_of: date,
    pool: CreditPool,
    credits: Iterable[DailyCredits],
    *,
    forecast_min_days: int = 3,
) -> CreditPoolRow:
    """The pool's use through ``as_of`` (the ledger's figure), its run rate (used ÷ days
    elapsed) and the day it runs out at that rate if that falls within the month.

    When already depleted, the depletion date is the first day of the month on which the
    cumulative daily credits reached the included amount (as_of if the daily series does not
    show it)."""
    month_rows = _in_month(credits, as_of)
    data_days = len({c[0] for c in month_rows})
    depleted = pool.remaining <= 0
    rate: Decimal | None = None
    forecast: Decimal | None = None
    if data_days >= forecast_min_days:
        rate = pool.used / as_of.day
        forecast = rate * days_in_month(as_of)
    depletion: date | None
    if depleted:
        depletion = as_of
        per_day: dict[date, Decimal] = defaultdict(lambda: Decimal(0))
        for d, *_rest, cr in month_rows:
            per_day[d] += cr
        total = Decimal(0)
        for d in sorted(per_day):
            total += per_day[d]
            if total >= pool.included:
                depletion = d
                break
    else:
        depletion = exhaustion_date(pool.remaining, rate, as_of)
        if depletion is not None and depletion > month_end(as_of):
            depletion = None
    return CreditPoolRow(
        as_of_date=as_of,
        month=month_of(as_of),
        included=_m(pool.included) or Decimal(0),
        used=_m(pool.used) or Decimal(0),
        remaining=_m(pool.remaining) or Decimal(0),
        percent_used=_pct(pool.used, pool.included),
        days_of_data=data_days,
        daily_run_rate=_m(rate),
        forecast_month_end_used=_m(forecast),
        forecast_remaining=_m(pool.included - forecast) if forecast is not None else None,
        projected_depletion_date=depletion,
        depleted=depleted,
    )


@dataclass(frozen=True)
class ProviderCapRow:
    as_of_date: date
    month: str
    provider: str
    metric: str
    unit: str
    cap_quantity: Decimal
    used_quantity: Decimal
    percent_used: Decimal
    remaining_quantity: Decimal
    over_cap: bool
    days_of_data: int
    forecast_month_end: Decimal | None
    forecast_overage: Decimal | None
    projected_exhaustion_date: date | None
    reason: str | None

    def record(self, load_id: str) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "load_id": load_id}


def provider_cap_status(
    as_of: date,
    *,
    provider: str,
    metric: str,
    unit: str,
    cap: Decimal,
    daily_quantity: Mapping[date, Decimal],
    covered_days: Iterable[date],
    forecast_min_days: int = 3,
    other_units: Iterable[str] = (),
) -> ProviderCapRow:
    """A provider's monthly allowance against its usage through ``as_of``.

    Provider data can have holes (days not fetched), so the run rate is the month's quantity ÷
    the days with complete coverage (equal to the budgets' days-elapsed rule when every day is
    fetched) and the forecast extrapolates it over the whole month."""
    first = month_start(as_of)
    used = sum((q for d, q in daily_quantity.items() if first <= d <= as_of), Decimal(0))
    covered = {d for d in covered_days if first <= d <= as_of}
    n = len(covered)
    forecast = rate = None
    if n >= forecast_min_days:
        rate = used / n
        forecast = rate * days_in_month(as_of)
    remaining = cap - used
    exhaustion = exhaustion_date(remaining, rate, as_of)
    if remaining > 0 and exhaustion is not None and exhaustion > month_end(as_of):
        exhaustion = None
    notes = []
    if n < as_of.day:
        notes.append(f"{as_of.day - n} day(s) of the month without complete {provider} coverage")
    others = sorted(set(other_units))
    if others:
        notes.append(f"{metric} also reported in other units, not counted: {', '.join(others)}")
    return ProviderCapRow(
        as_of_date=as_of,
        month=month_of(as_of),
        provider=provider,
        metric=metric,
        unit=unit,
        cap_quantity=_m(cap) or Decimal(0),
        used_quantity=_m(used) or Decimal(0),
        percent_used=_pct(used, cap) or Decimal(0),
        remaining_quantity=_m(remaining) or Decimal(0),
        over_cap=used > cap,
        days_of_data=n,
        forecast_month_end=_m(forecast),
        forecast_overage=_m(forecast - cap) if forecast is not None and forecast > cap else None,
        projected_exhaustion_date=exhaustion,
        reason="; ".join(notes) or None,
    )


@dataclass(frozen=True)
class AnomalyRow:
    usage_date: date
    entity_id: str
    entity_type: str | None
    resource_type: str
    credits: Decimal
    baseline_credits: Decimal
    baseline_days: int
    impact_credits: Decimal
    impact_pct: Decimal | None
    direction: str  # spike | drop
    is_anomaly: bool

    def record(self, load_id: str) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "load_id": load_id}


def anomalies(
    day: date,
    credits: Iterable[DailyCredits],
    *,
    baseline_days: int = 14,
    min_baseline_days: int = 7,
    threshold_pct: Decimal = Decimal(100),
    min_credits: Decimal = Decimal(10),
) -> list[AnomalyRow]:
    """Each (entity, resource type)'s credits on ``day`` against the mean of the trailing
    window [day - baseline_days, day - 1].

    The baseline divides by the window's days on which the ledger holds any usage (a day the
    ledger has no data at all is not evidence of zero use). Nothing is judged when ``day``
    itself has no ledger data or the window has fewer than ``min_baseline_days`` data days.
    An anomaly deviates by at least ``threshold_pct`` percent of the baseline (any amount when
    the baseline is zero) and by at least ``min_credits`` credits, in either direction.
    """
    window_start = day - timedelta(days=baseline_days)
    rows = [c for c in credits if window_start <= c[0] <= day]
    data_days = {c[0] for c in rows}
    window_days = {d for d in data_days if d < day}
    if day not in data_days or len(window_days) < min_baseline_days:
        return []
    today: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal(0))
    past: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal(0))
    types: dict[str, str] = {}
    for d, eid, etype, rt, cr in rows:
        types.setdefault(eid, etype)
        if d == day:
            today[(eid, rt)] += cr
        else:
            past[(eid, rt)] += cr
    n = Decimal(len(window_days))
    out: list[AnomalyRow] = []
    for key in sorted(set(today) | set(past)):
        eid, rt = key
        value = today.get(key, Decimal(0))
        baseline = past.get(key, Decimal(0)) / n
        impact = value - baseline
        pct = _pct(impact, baseline)
        big_enough = abs(impact) >= min_credits and abs(impact) > 0
        is_anomaly = big_enough and (pct is None or abs(pct) >= threshold_pct)
        out.append(
            AnomalyRow(
                usage_date=day,
                entity_id=eid,
                entity_type=types.get(eid),
                resource_type=rt,
                credits=_m(value) or Decimal(0),
                baseline_credits=_m(baseline) or Decimal(0),
                baseline_days=len(window_days),
                impact_credits=_m(impact) or Decimal(0),
                impact_pct=pct,
                direction="spike" if impact >= 0 else "drop",
                is_anomaly=is_anomaly,
            )
        )
    return out
