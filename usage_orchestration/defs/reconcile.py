"""``usage_reconciliation``: provider usage against the ledger, per day, entity and resource type.

Thin: the SQL lives in ``warehouse/analysis.py``, the comparison in ``core/reconcile.py``. Checks,
returned with the materialization:
- ``within_tolerance`` (ERROR): no break outside the rate card's tolerance;
- ``no_blocking_breaks`` (ERROR, blocking): no break of a resource type whose rate-card entry
  sets ``block_downstream`` — such a break stops ``budget_status`` and the other downstream
  assets in the same run;
- ``completeness`` (ERROR): every configured provider account has coverage for every day;
- ``unmapped_usage`` (WARN): all provider usage maps to a ledger entity.
"""

from collections.abc import Sequence

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Definitions,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
)

from usage_orchestration.core.money import credits_metadata, format_credits
from usage_orchestration.core.reconcile import (
    STATUSES,
    ReconciliationRow,
    ReconciliationSummary,
    summarize,
)
from usage_orchestration.defs.common import (
    LEDGER_DAILY_USAGE,
    RECONCILIATION,
    daily_asset,
    day_span,
    load_id,
    partition_days,
    record_days,
    table,
)
from usage_orchestration.defs.ledger import EntityNames, LedgerResource, ledger_reader
from usage_orchestration.defs.resources import WarehouseResource, warehouse_kind
from usage_orchestration.providers.registry import (
    enabled_providers,
    expected_accounts,
    reconcile_config,
)
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.analysis import (
    Completeness,
    completeness,
    reconcile_days,
    write_reconciliation,
)
from usage_orchestration.warehouse.analysis_schema import usage_reconciliation as recon_table

CHECK_TOLERANCE = "within_tolerance"
CHECK_BLOCKING = "no_blocking_breaks"
CHECK_COMPLETENESS = "completeness"
CHECK_UNMAPPED = "unmapped_usage"

WORST_COLUMNS = [
    "usage_date",
    "provider",
    "entity_name",
    "entity_id",
    "resource_type",
    "status",
    "expected_credits",
    "recorded_credits",
    "delta_credits",
    "delta_pct",
    "reason",
]
UNMAPPED_COLUMNS = [
    "usage_date",
    "provider",
    "resource_type",
    "ledger_unit",
    "expected_quantity",
    "reason",
]

CHECK_SPECS = [
    AssetCheckSpec(
        CHECK_TOLERANCE,
        asset=RECONCILIATION,
        description="Every (day, entity, resource type) within the rate card's tolerance.",
    ),
    AssetCheckSpec(
        CHECK_BLOCKING,
        asset=RECONCILIATION,
        blocking=True,
        description="No break of a resource type marked block_downstream in the rate card; "
        "a failure stops the downstream assets of the run.",
    ),
    AssetCheckSpec(
        CHECK_COMPLETENESS,
        asset=RECONCILIATION,
        description="Every configured provider account has fetch coverage for every day.",
    ),
    AssetCheckSpec(
        CHECK_UNMAPPED,
        asset=RECONCILIATION,
        description="All provider usage maps to a ledger entity and resource type.",
    ),
]


def _rows_table(
    rows: Sequence[ReconciliationRow],
    columns: list[str],
    limit: int,
    names: EntityNames | None = None,
) -> MetadataValue:
    records = [
        {
            **r.record(""),
            "entity_name": names.name(r.entity_id, r.usage_date) if names and r.entity_id else None,
        }
        for r in rows[:limit]
    ]
    return table(records, columns, limit=limit)


def _tolerance_check(
    summary: ReconciliationSummary, breaks: int, limit: int, names: EntityNames
) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=CHECK_TOLERANCE,
        passed=not breaks,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if not breaks
        else f"{breaks} break(s) on {len(summary.days_with_breaks)} day(s)",
        metadata={
            "breaks": breaks,
            "leak_credits": credits_metadata(summary.leak_credits),
            "overcharge_credits": credits_metadata(summary.overcharge_credits),
            "days_with_breaks": MetadataValue.text(
                ", ".join(d.isoformat() for d in summary.days_with_breaks) or "none"
            ),
            "worst_breaks": _rows_table(summary.worst, WORST_COLUMNS, limit, names),
        },
    )


def _blocking_check(
    blocking: Sequence[ReconciliationRow], settings: UsageSettings, names: EntityNames
) -> AssetCheckResult:
    types = sorted(k for k, v in settings.rate_card.items() if v.block_downstream)
    return AssetCheckResult(
        check_name=CHECK_BLOCKING,
        passed=not blocking,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "blocking_breaks": len(blocking),
            "blocking_resource_types": MetadataValue.text(", ".join(types) or "none"),
            "breaks": _rows_table(
                blocking, WORST_COLUMNS, settings.budgets.worst_rows_shown, names
            ),
        },
    )


def _completeness_check(found: Completeness) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=CHECK_COMPLETENESS,
        passed=not found.missing,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "days_incomplete": len(found.missing),
            "accounts_missing": sum(len(v) for v in found.missing.values()),
            "accounts_unavailable": found.unavailable,
            "missing": table(
                [
                    {"usage_date": d, "accounts": ", ".join(v)}
                    for d, v in sorted(found.missing.items())
                ],
                ["usage_date", "accounts"],
            ),
        },
    )


def _unmapped_check(
    unmapped: Sequence[ReconciliationRow], summary: ReconciliationSummary
) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=CHECK_UNMAPPED,
        passed=not unmapped,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "unmapped_groups": len(unmapped),
            "unmapped_rows": summary.unmapped_rows,
            "unmapped": _rows_table(unmapped, UNMAPPED_COLUMNS, 20),
        },
    )


def _day_metadata(
    rows: Sequence[ReconciliationRow], settings: UsageSettings, names: EntityNames
) -> dict[str, object]:
    """One day's figures (each partition its own, so plots over time are real series)."""
    summary = summarize(rows, worst=settings.budgets.worst_rows_shown)
    meta: dict[str, object] = {
        "rows": len(rows),
        "breaks": summary.breaks,
        "blocking_breaks": summary.blocking_breaks,
        "leak_credits": credits_metadata(summary.leak_credits),
        "overcharge_credits": credits_metadata(summary.overcharge_credits),
        "unmapped_rows": summary.unmapped_rows,
        "ledger_coverage": MetadataValue.text(
            "unavailable" if any(r.status == "ledger_unavailable" for r in rows) else "complete"
        ),
        "worst_breaks": _rows_table(
            summary.worst, WORST_COLUMNS, settings.budgets.worst_rows_shown, names
        ),
    }
    for status in STATUSES:
        meta[f"count_{status}"] = summary.counts[status]
    return meta


def build_reconciliation_asset(settings: UsageSettings) -> AssetsDefinition:
    providers = enabled_providers(settings)
    deps = [AssetDep(LEDGER_DAILY_USAGE)] + [AssetDep(AssetKey(p.asset_key)) for p in providers]

    # A backfill range is one run: three grouped queries for the whole range.
    @daily_asset(
        key=RECONCILIATION,
        deps=deps,
        kinds={"python", warehouse_kind(settings.warehouse_url)},
        group="analysis",
        settings=settings,
        check_specs=CHECK_SPECS,
        table=recon_table,
        description="Provider usage (converted with the rate card) against the credit ledger per "
        "day, entity and resource type, with a status (matched, ledger_under, ledger_over, "
        "missing_in_ledger, missing_at_provider, unmapped, provider_unavailable, "
        "ledger_unavailable); a day's rows are replaced atomically.",
    )
    def usage_reconciliation(
        context: AssetExecutionContext,
        settings: ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
        ledger: LedgerResource,
    ) -> MaterializeResult:
        days = partition_days(context)
        wh = warehouse.get()
        # names beside ids in the tables (the ledger's budgets; ids only if it cannot be read)
        names = EntityNames(ledger_reader(ledger), context.log.warning)
        by_day = reconcile_days(wh, days, reconcile_config(settings))
        rows = [r for d in sorted(by_day) for r in by_day[d]]
        written = write_reconciliation(wh, days, rows, load_id(context))
        summary = summarize(rows, worst=settings.budgets.worst_rows_shown)
        context.log.info(
            f"reconciliation {day_span(days)}: {written} rows, {summary.breaks} break(s), "
            f"leak {format_credits(summary.leak_credits)} credits, "
            f"overcharge {format_credits(summary.overcharge_credits)}"
        )
        breaks = [r for r in rows if r.is_break]
        checks = [
            _tolerance_check(summary, len(breaks), settings.budgets.worst_rows_shown, names),
            _blocking_check([r for r in breaks if r.blocking], settings, names),
            _completeness_check(completeness(wh, days, expected_accounts(settings))),
            _unmapped_check([r for r in rows if r.status == "unmapped"], summary),
        ]
        record_days(context, lambda d: _day_metadata(by_day.get(d, []), settings, names))
        providers_shown = ", ".join(p.name for p in providers) or "none"
        return MaterializeResult(
            metadata={"providers": MetadataValue.text(providers_shown)}, check_results=checks
        )

    return usage_reconciliation


def definitions(settings: UsageSettings) -> Definitions:
    return Definitions(assets=[build_reconciliation_asset(settings)])
