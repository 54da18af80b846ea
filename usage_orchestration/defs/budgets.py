"""Budgets as of each day: ``budget_status`` (+ credit pool), ``provider_cap_status``,
``usage_anomalies``.

Thin: the ledger aggregates through ``LedgerReader`` (SQL GROUP BY in the ledger), provider
quantities through ``analysis_io`` (SQL in the warehouse), the rules in ``budgets.py``. Each
asset handles every day of a single-run range and replaces those days in one transaction.
Only ledger rows dated up to the partition day count, so an old day re-materialized later gives
the figures as of that day, with the budgets in force that month.
"""

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
from sqlalchemy import Table

from usage_orchestration.core.budgets import (
    NOT_CONFIGURED,
    AnomalyRow,
    BudgetRow,
    CreditPoolRow,
    ProviderCapRow,
    anomalies,
    budget_status,
    credit_pool_status,
    provider_cap_status,
)
from usage_orchestration.core.dates import month_of, month_start
from usage_orchestration.core.money import credits_metadata, format_credits
from usage_orchestration.defs import common
from usage_orchestration.defs.ledger import EntityNames, LedgerResource, ledger_kind, ledger_reader
from usage_orchestration.defs.resources import WarehouseResource, warehouse_kind
from usage_orchestration.ledger.base import EntityBudget, LedgerReader
from usage_orchestration.ledger.sql import CreditPoolNotConfigured
from usage_orchestration.providers.registry import enabled_names, provider
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.analysis import provider_daily_quantity, write_rows
from usage_orchestration.warehouse.analysis_schema import (
    budget_status as budget_status_table,
)
from usage_orchestration.warehouse.analysis_schema import (
    credit_pool_status as credit_pool_table,
)
from usage_orchestration.warehouse.analysis_schema import (
    provider_cap_status as provider_cap_table,
)
from usage_orchestration.warehouse.analysis_schema import (
    usage_anomaly as usage_anomaly_table,
)
from usage_orchestration.warehouse.store import Warehouse


def _f(x: Decimal | None) -> float | None:
    return None if x is None else float(x)


def _credits_span(
    reader: LedgerReader, start: date, end: date
) -> list[tuple[date, str, str, str, Decimal]]:
    return list(reader.credits_by_day(start, end))


@dataclass(frozen=True)
class BudgetRun:
    """Budget and pool rows of a range, and the months the ledger has no budgets for (reported
    as not configured; a day without a pool row is one whose month has no pool)."""

    budgets: list[BudgetRow]
    pools: list[CreditPoolRow]
    months_without_budgets: frozenset[str]


def compute_budgets(
    reader: LedgerReader, days: Sequence[date], settings: UsageSettings
) -> tuple[list[BudgetRow], list[CreditPoolRow]]:
    run = compute_budget_run(reader, days, settings)
    return run.budgets, run.pools


def compute_budget_run(
    reader: LedgerReader, days: Sequence[date], settings: UsageSettings
) -> BudgetRun:
    """Budget and pool rows for every day of ``days``: one credits query for the whole span,
    one budgets query per month, one pool query per day.

    A month without budgets gives ``not_configured`` rows; a day whose month has no credit pool
    gives no pool row (``pool_status`` "not configured" in the metadata): a backfill reaching
    back before budgets and pool were set succeeds, the configured months computed."""
    cfg = settings.budgets
    ordered = sorted(set(days))
    credits = _credits_span(reader, month_start(ordered[0]), ordered[-1])
    by_month: dict[str, list[tuple[date, str, str, str, Decimal]]] = defaultdict(list)
    for c in credits:
        by_month[month_of(c[0])].append(c)
    months: dict[str, list[EntityBudget]] = {}
    pool_missing: set[str] = set()
    budgets: list[BudgetRow] = []
    pools: list[CreditPoolRow] = []
    for d in ordered:
        m = month_of(d)
        if m not in months:
            months[m] = reader.budgets(m)
        upto = [c for c in by_month.get(m, []) if c[0] <= d]
        budgets += budget_status(
            d,
            upto,
            months[m],
            thresholds=cfg.thresholds_pct,
            forecast_min_days=cfg.forecast_min_days,
        )
        if m in pool_missing:
            continue
        try:
            pool = reader.credit_pool(d)
        except CreditPoolNotConfigured:
            pool_missing.add(m)  # the pool is monthly: no need to ask again this month
            continue
        pools.append(credit_pool_status(d, pool, upto, forecast_min_days=cfg.forecast_min_days))
    return BudgetRun(
        budgets,
        pools,
        frozenset(m for m, b in months.items() if not b),
    )


def compute_anomalies(
    reader: LedgerReader, days: Sequence[date], settings: UsageSettings
) -> list[AnomalyRow]:
    cfg = settings.budgets
    ordered = sorted(set(days))
    credits = sorted(
        _credits_span(reader, ordered[0] - timedelta(days=cfg.anomaly_baseline_days), ordered[-1]),
        key=lambda c: c[0],
    )
    days_index = [c[0] for c in credits]
    out: list[AnomalyRow] = []
    for d in ordered:
        lo = bisect_left(days_index, d - timedelta(days=cfg.anomaly_baseline_days))
        hi = bisect_right(days_index, d)
        out += anomalies(
            d,
            credits[lo:hi],
            baseline_days=cfg.anomaly_baseline_days,
            min_baseline_days=cfg.anomaly_min_baseline_days,
            threshold_pct=cfg.anomaly_threshold_pct,
            min_credits=cfg.anomaly_min_credits,
        )
    return out


def compute_caps(wh: Any, days: Sequence[date], settings: UsageSettings) -> list[ProviderCapRow]:
    enabled = set(enabled_names(settings))
    ordered = sorted(set(days))
    out: list[ProviderCapRow] = []
    for cap in settings.budgets.provider_caps:
        if cap.provider not in enabled:
            continue
        daily, covered, other_units = provider_daily_quantity(
            wh, cap.provider, cap.metric, cap.unit, month_start(ordered[0]), ordered[-1]
        )
        for d in ordered:
            out.append(
                provider_cap_status(
                    d,
                    provider=cap.provider,
                    metric=cap.metric,
                    unit=cap.unit,
                    cap=cap.monthly_quantity,
                    daily_quantity=daily,
                    covered_days=covered,
                    forecast_min_days=settings.budgets.forecast_min_days,
                    other_units=other_units,
                )
            )
    return out


BUDGET_COLUMNS = [
    "entity_name",
    "entity_id",
    "budget_state",
    "credits_used",
    "monthly_budget",
    "budget_percent",
    "thresholds_crossed",
    "forecast_month_end",
    "forecast_overrun",
    "over_budget",
]
ANOMALY_COLUMNS = [
    "usage_date",
    "entity_name",
    "entity_id",
    "resource_type",
    "credits",
    "baseline_credits",
    "impact_credits",
    "impact_pct",
    "direction",
]
CAP_COLUMNS = [
    "provider",
    "metric",
    "unit",
    "cap_quantity",
    "used_quantity",
    "percent_used",
    "forecast_month_end",
    "forecast_overage",
    "projected_exhaustion_date",
    "reason",
]


# A month to date reaches at most 30 days before its last day (the 31st back to the 1st).
MONTH_TO_DATE_DAYS = 30


def trailing_days(days: int) -> dg.TimeWindowPartitionMapping:
    """Day D reads days D-``days``..D upstream; before the partitions' start there is nothing
    to read (not an error)."""
    return dg.TimeWindowPartitionMapping(
        start_offset=-days, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


# What a ledger-derived asset computes: context, settings, ledger reader, warehouse → result.
LedgerStep = Callable[[dg.AssetExecutionContext, UsageSettings, LedgerReader, Warehouse], Any]


def _ledger_derived_asset(
    settings: UsageSettings,
    key: dg.AssetKey,
    deps: list[dg.AssetDep],
    description: str,
    step: LedgerStep,
    check_specs: Sequence[dg.AssetCheckSpec] = (),
    table: Table | None = None,
) -> dg.AssetsDefinition:
    """A daily asset computed in Python from the ledger into the warehouse (``table``)."""

    @common.daily_asset(
        key=key,
        deps=deps,
        kinds={"python", ledger_kind(settings), warehouse_kind(settings.warehouse_url)},
        group="analysis",
        description=description,
        settings=settings,
        check_specs=list(check_specs),
        table=table,
    )
    def ledger_derived(
        context: dg.AssetExecutionContext,
        settings: dg.ResourceParam[UsageSettings],
        ledger: LedgerResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        return step(context, settings, ledger_reader(ledger), warehouse.get())

    return ledger_derived


def build_budget_status_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    return _ledger_derived_asset(
        settings,
        common.BUDGET_STATUS,
        [
            dg.AssetDep(common.RECONCILIATION),
            dg.AssetDep(
                common.LEDGER_DAILY_USAGE, partition_mapping=trailing_days(MONTH_TO_DATE_DAYS)
            ),
            dg.AssetDep(
                common.CREDIT_LEDGER
            ),  # read directly (credits month to date, budgets, pool)
        ],
        "Per entity, as of each day: credits used month to date, monthly budget, percent, "
        "remaining, thresholds crossed, run-rate month-end forecast and overrun (budget_state "
        "not_configured for a month without budgets); plus the shared credit pool (used, "
        "remaining, projected depletion date) in credit_pool_status.",
        _materialize_budgets,
        table=budget_status_table,
        check_specs=[
            dg.AssetCheckSpec(
                WITHIN_BUDGET_CHECK,
                asset=common.BUDGET_STATUS,
                description="As of the run's last day no entity is over its monthly budget "
                "(ERROR) or forecast to overrun it by month end (WARN); the metadata lists them. "
                "Months without budgets (not_configured) pass, named in the description.",
            )
        ],
    )


WITHIN_BUDGET_CHECK = "within_budget"


def _within_budget(
    budgets: Sequence[BudgetRow], months_without_budgets: Iterable[str] = ()
) -> dg.AssetCheckResult:
    """Red in the UI when an entity is over budget on the last day, yellow when one is only
    forecast to overrun: the budget state at a glance, beside the pages the sensors send.

    A month without budgets (``not_configured``) passes, saying so in the description: there
    is nothing to be over, and a backfill of months before budgets existed must not go red."""
    last = max((b.as_of_date for b in budgets), default=None)
    latest = [b for b in budgets if b.as_of_date == last]
    over = [b for b in latest if b.over_budget]
    overrun = [b for b in latest if b.forecast_overrun is not None and not b.over_budget]
    not_configured = sorted(
        {b.month for b in budgets if b.budget_state == NOT_CONFIGURED} | set(months_without_budgets)
    )
    rows = [b.record("") for b in over + overrun]
    if over or overrun:
        description = (
            f"{len(over)} entit{'y' if len(over) == 1 else 'ies'} over budget, {len(overrun)} "
            f"forecast to overrun, as of {last}"
        )
    elif last is None:
        description = "no entity has a budget or credits in the range"
    else:
        description = f"every entity within budget as of {last}"
    if not_configured:
        description += f"; budgets not configured for {', '.join(not_configured)}"
    return dg.AssetCheckResult(
        check_name=WITHIN_BUDGET_CHECK,
        passed=not over and not overrun,
        severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "over_budget": len(over),
            "forecast_overruns": len(overrun),
            "months_not_configured": dg.MetadataValue.text(", ".join(not_configured) or "none"),
            "entities": common.table(rows, BUDGET_COLUMNS),
        },
    )


def _replace_run_days(
    context: dg.AssetExecutionContext,
    wh: Warehouse,
    table: Table,
    days: Sequence[date],
    rows: Sequence[AnomalyRow] | Sequence[ProviderCapRow],
    day_column: str,
) -> int:
    """Replace one table's rows for the run's days (one transaction); the rows written."""
    load = common.load_id(context)
    return write_rows(wh, {table: (days, [r.record(load) for r in rows], day_column)})[table.name]


def _materialize_budgets(
    context: dg.AssetExecutionContext, settings: UsageSettings, reader: LedgerReader, wh: Warehouse
) -> dg.MaterializeResult:
    days = common.partition_days(context)
    load = common.load_id(context)
    run = compute_budget_run(reader, days, settings)
    write_rows(
        wh,
        {
            budget_status_table: (days, [b.record(load) for b in run.budgets], "as_of_date"),
            credit_pool_table: (days, [p.record(load) for p in run.pools], "as_of_date"),
        },
    )
    by_day: dict[date, list[BudgetRow]] = defaultdict(list)
    for b in run.budgets:
        by_day[b.as_of_date].append(b)
    pool_of = {p.as_of_date: p for p in run.pools}
    _log_budgets(context, days, by_day, pool_of)
    common.record_days(
        context,
        lambda d: budget_day_metadata(
            d,
            by_day[d],
            pool_of.get(d),
            settings,
            budgets_configured=month_of(d) not in run.months_without_budgets,
        ),
    )
    return dg.MaterializeResult(
        check_results=[_within_budget(run.budgets, run.months_without_budgets)]
    )


def _log_budgets(
    context: dg.AssetExecutionContext,
    days: Sequence[date],
    by_day: Mapping[date, Sequence[BudgetRow]],
    pool_of: Mapping[date, CreditPoolRow],
) -> None:
    last = max(days)
    latest = by_day.get(last, [])
    pool = pool_of.get(last)
    pool_text = (
        f"pool {format_credits(pool.remaining)} of {format_credits(pool.included)} left"
        if pool
        else f"pool not configured for {month_of(last)}"
    )
    context.log.info(
        f"budgets {common.day_span(days)}: {len(latest)} entities as of {last}, "
        f"{sum(b.over_budget for b in latest)} over budget, "
        f"{sum(b.forecast_overrun is not None for b in latest)} forecast to overrun; {pool_text}"
    )


def budget_day_metadata(
    day: date,
    latest: Sequence[BudgetRow],
    pool: CreditPoolRow | None,
    settings: UsageSettings,
    *,
    budgets_configured: bool = True,
) -> dict[str, Any]:
    """One day's budgets and pool, as that partition's metadata (credits at 2 decimals)."""
    over = [b for b in latest if b.over_budget]
    overrun = [b for b in latest if b.forecast_overrun is not None]
    not_configured = [b for b in latest if b.budget_state == NOT_CONFIGURED]
    worst = sorted(latest, key=lambda b: -(b.forecast_percent or b.budget_percent or Decimal(-1)))
    meta: dict[str, Any] = {
        "as_of": dg.MetadataValue.text(day.isoformat()),
        "budgets_status": dg.MetadataValue.text(
            "configured" if budgets_configured else "not configured"
        ),
        "entities": len(latest),
        "entities_not_configured": len(not_configured),
        "over_budget": len(over),
        "forecast_overruns": len(overrun),
        "credits_used_mtd": credits_metadata(sum((b.credits_used for b in latest), Decimal(0))),
        "forecast_overrun_credits": credits_metadata(
            sum((b.forecast_overrun or Decimal(0) for b in latest), Decimal(0))
        ),
        "pool_status": dg.MetadataValue.text("configured" if pool else "not configured"),
        "budgets": common.table(
            [b.record("") for b in worst], BUDGET_COLUMNS, limit=settings.budgets.worst_rows_shown
        ),
    }
    if pool is not None:
        meta |= {
            "pool_included": credits_metadata(pool.included),
            "pool_used": credits_metadata(pool.used),
            "pool_remaining": credits_metadata(pool.remaining),
            "pool_percent_used": _f(pool.percent_used),
            "pool_projected_depletion": dg.MetadataValue.text(
                pool.projected_depletion_date.isoformat()
                if pool.projected_depletion_date
                else "not this month"
            ),
        }
    return {k: v for k, v in meta.items() if v is not None}


def build_usage_anomalies_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    return _ledger_derived_asset(
        settings,
        dg.AssetKey("usage_anomalies"),
        [
            dg.AssetDep(
                common.LEDGER_DAILY_USAGE,
                partition_mapping=trailing_days(settings.budgets.anomaly_baseline_days),
            ),
            dg.AssetDep(common.CREDIT_LEDGER),  # read directly (the baseline's credits)
        ],
        "Each day's credits per entity and resource type against the trailing baseline (mean of "
        "the prior 14 days with ledger data), with impact in credits and percent (table "
        "usage_anomaly; is_anomaly marks the rows past the thresholds in settings).",
        _materialize_anomalies,
        table=usage_anomaly_table,
    )


def _materialize_anomalies(
    context: dg.AssetExecutionContext, settings: UsageSettings, reader: LedgerReader, wh: Warehouse
) -> dg.MaterializeResult:
    days = common.partition_days(context)
    rows = compute_anomalies(reader, days, settings)
    written = _replace_run_days(context, wh, usage_anomaly_table, days, rows, "usage_date")
    flagged = sorted((r for r in rows if r.is_anomaly), key=lambda r: -abs(r.impact_credits))
    context.log.info(
        f"anomalies {common.day_span(days)}: {len(flagged)} of {len(rows)} series flagged"
    )
    shown = settings.budgets.worst_rows_shown
    by_day: dict[date, list[AnomalyRow]] = {d: [] for d in days}
    for r in rows:
        by_day.setdefault(r.usage_date, []).append(r)
    names = EntityNames(reader, context.log.warning)  # one ledger query per month of the run

    def day_metadata(d: date) -> dict[str, Any]:
        judged = by_day[d]
        day_flagged = [r for r in flagged if r.usage_date == d]
        return {
            "series_judged": len(judged),
            "anomalies": len(day_flagged),
            "spikes": sum(1 for r in day_flagged if r.direction == "spike"),
            "drops": sum(1 for r in day_flagged if r.direction == "drop"),
            "impact_credits": credits_metadata(
                sum((r.impact_credits for r in day_flagged), Decimal(0))
            ),
            "worst": common.table(
                _with_entity_names(names, day_flagged[:shown]), ANOMALY_COLUMNS, limit=shown
            ),
        }

    common.record_days(context, day_metadata)  # each day its own anomalies
    return dg.MaterializeResult(
        metadata={
            "rows_written": written,
            "days": len(days),
            "days_judged": len({r.usage_date for r in rows}),
            "anomalies_in_run": len(flagged),
        }
    )


def _with_entity_names(names: EntityNames, rows: Sequence[AnomalyRow]) -> list[dict[str, Any]]:
    """Anomaly records with the entity's name from the ledger's budgets of that month (an
    entity without a budget that month shows its id only)."""
    return [{**r.record(""), "entity_name": names.name(r.entity_id, r.usage_date)} for r in rows]


def build_provider_caps_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    providers = sorted(
        {c.provider for c in settings.budgets.provider_caps} & set(enabled_names(settings))
    )
    # One capped provider (Forge by default) gives the asset that provider's kind and tag.
    single = providers[0] if len(providers) == 1 else None

    @common.daily_asset(
        key=common.PROVIDER_CAP_STATUS,
        deps=common.provider_deps(
            (provider(p) for p in providers), trailing_days(MONTH_TO_DATE_DAYS)
        ),
        kinds={"python", warehouse_kind(settings.warehouse_url), *([single] if single else [])},
        provider=single or common.ALL_PROVIDERS,
        group="analysis",
        table=provider_cap_table,
        description="Provider-side monthly allowances (e.g. the Forge free 100,000 GB-seconds of "
        "function compute) against month-to-date provider usage, with a run-rate forecast.",
        settings=settings,
        check_specs=[
            dg.AssetCheckSpec(
                WITHIN_CAP_CHECK,
                asset=common.PROVIDER_CAP_STATUS,
                description="As of the run's last day no provider allowance is used up (ERROR) "
                "or forecast to be by month end (WARN); the metadata lists them.",
            )
        ],
    )
    def provider_cap_status(
        context: dg.AssetExecutionContext,
        settings: dg.ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        days = common.partition_days(context)
        wh = warehouse.get()
        rows = compute_caps(wh, days, settings)
        written = _replace_run_days(context, wh, provider_cap_table, days, rows, "as_of_date")
        last = max(days)
        by_day: dict[date, list[ProviderCapRow]] = {d: [] for d in days}
        for r in rows:
            by_day.setdefault(r.as_of_date, []).append(r)
        # each day its own caps (the range's last day is the check's); the run's row count
        common.record_days(context, lambda d: _caps_day_metadata(by_day[d]))
        latest = by_day[last]
        meta: dict[str, Any] = {"rows_written": written, "days": len(days)}
        return dg.MaterializeResult(metadata=meta, check_results=[_within_cap(latest, last)])

    return provider_cap_status


WITHIN_CAP_CHECK = "within_cap"


def _caps_day_metadata(day: Sequence[ProviderCapRow]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "caps": len(day),
        "over_cap": sum(1 for r in day if r.over_cap),
        "forecast_over_cap": sum(1 for r in day if r.forecast_overage is not None),
        "caps_table": common.table([r.record("") for r in day], CAP_COLUMNS),
    }
    for r in day:
        meta[f"percent_used_{r.provider}_{r.metric}"] = float(r.percent_used)
    return meta


def _within_cap(latest: Sequence[ProviderCapRow], last: date) -> dg.AssetCheckResult:
    """Red when an allowance is used up (the provider bills overage), yellow when forecast to
    be: the caps at a glance in the catalog, beside the provider_cap alerts."""
    over = [r for r in latest if r.over_cap]
    forecast = [r for r in latest if not r.over_cap and r.forecast_overage is not None]
    return dg.AssetCheckResult(
        check_name=WITHIN_CAP_CHECK,
        passed=not over and not forecast,
        severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(over)} allowance(s) used up, {len(forecast)} forecast to be, as of {last}"
            if over or forecast
            else f"every provider allowance within its cap as of {last}"
        ),
        metadata={"caps": common.table([r.record("") for r in over + forecast], CAP_COLUMNS)},
    )


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            build_budget_status_asset(settings),
            build_usage_anomalies_asset(settings),
            build_provider_caps_asset(settings),
        ]
    )
