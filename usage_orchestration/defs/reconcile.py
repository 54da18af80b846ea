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
from dataclasses import dataclass
from typing import Any

import dagster as dg

from usage_orchestration.core.money import credits_metadata, format_credits
from usage_orchestration.core.reconcile import (
    STATUSES,
    ReconciliationRow,
    ReconciliationSummary,
    summarize,
)
from usage_orchestration.defs import common
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


@dataclass(frozen=True)
class _Check:
    """A check of the reconciliation: what it asks, and how red it goes when it fails."""

    name: str
    severity: dg.AssetCheckSeverity
    description: str
    blocking: bool = False

    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.name,
            asset=common.RECONCILIATION,
            blocking=self.blocking,
            description=self.description,
        )

    def result(
        self, found: int, metadata: dict[str, Any], description: str | None = None
    ) -> dg.AssetCheckResult:
        """Passes when it ``found`` nothing wrong."""
        return dg.AssetCheckResult(
            check_name=self.name,
            passed=not found,
            severity=self.severity,
            description=description,
            metadata=metadata,
        )


WITHIN_TOLERANCE = _Check(
    "within_tolerance",
    dg.AssetCheckSeverity.ERROR,
    "Every (day, entity, resource type) within the rate card's tolerance.",
)
NO_BLOCKING_BREAKS = _Check(
    "no_blocking_breaks",
    dg.AssetCheckSeverity.ERROR,
    "No break of a resource type marked block_downstream in the rate card; "
    "a failure stops the downstream assets of the run.",
    blocking=True,
)
COMPLETENESS = _Check(
    "completeness",
    dg.AssetCheckSeverity.ERROR,
    "Every configured provider account has fetch coverage for every day.",
)
UNMAPPED_USAGE = _Check(
    "unmapped_usage",
    dg.AssetCheckSeverity.WARN,
    "All provider usage maps to a ledger entity and resource type.",
)
CHECK_SPECS = [
    c.spec() for c in (WITHIN_TOLERANCE, NO_BLOCKING_BREAKS, COMPLETENESS, UNMAPPED_USAGE)
]

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


def _rows_table(
    rows: Sequence[ReconciliationRow],
    columns: list[str],
    limit: int,
    names: EntityNames | None = None,
) -> dg.MetadataValue:
    records = [
        {
            **r.record(""),
            "entity_name": names.name(r.entity_id, r.usage_date) if names and r.entity_id else None,
        }
        for r in rows[:limit]
    ]
    return common.table(records, columns, limit=limit)


def _tolerance_check(
    summary: ReconciliationSummary, breaks: int, limit: int, names: EntityNames
) -> dg.AssetCheckResult:
    return WITHIN_TOLERANCE.result(
        breaks,
        {
            "breaks": breaks,
            "leak_credits": credits_metadata(summary.leak_credits),
            "overcharge_credits": credits_metadata(summary.overcharge_credits),
            "days_with_breaks": dg.MetadataValue.text(
                ", ".join(d.isoformat() for d in summary.days_with_breaks) or "none"
            ),
            "worst_breaks": _rows_table(summary.worst, WORST_COLUMNS, limit, names),
        },
        None if not breaks else f"{breaks} break(s) on {len(summary.days_with_breaks)} day(s)",
    )


def _blocking_check(
    blocking: Sequence[ReconciliationRow], settings: UsageSettings, names: EntityNames
) -> dg.AssetCheckResult:
    types = sorted(k for k, v in settings.rate_card.items() if v.block_downstream)
    return NO_BLOCKING_BREAKS.result(
        len(blocking),
        {
            "blocking_breaks": len(blocking),
            "blocking_resource_types": dg.MetadataValue.text(", ".join(types) or "none"),
            "breaks": _rows_table(
                blocking, WORST_COLUMNS, settings.budgets.worst_rows_shown, names
            ),
        },
    )


def _completeness_check(found: Completeness) -> dg.AssetCheckResult:
    return COMPLETENESS.result(
        len(found.missing),
        {
            "days_incomplete": len(found.missing),
            "accounts_missing": sum(len(v) for v in found.missing.values()),
            "accounts_unavailable": found.unavailable,
            "missing": common.table(
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
) -> dg.AssetCheckResult:
    return UNMAPPED_USAGE.result(
        len(unmapped),
        {
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
        "ledger_coverage": dg.MetadataValue.text(
            "unavailable" if any(r.status == "ledger_unavailable" for r in rows) else "complete"
        ),
        "worst_breaks": _rows_table(
            summary.worst, WORST_COLUMNS, settings.budgets.worst_rows_shown, names
        ),
    }
    for status in STATUSES:
        meta[f"count_{status}"] = summary.counts[status]
    return meta


def build_reconciliation_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    providers = enabled_providers(settings)

    # A backfill range is one run: three grouped queries for the whole range.
    @common.daily_asset(
        key=common.RECONCILIATION,
        deps=[dg.AssetDep(common.LEDGER_DAILY_USAGE), *common.provider_deps(providers)],
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
        context: dg.AssetExecutionContext,
        settings: dg.ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
        ledger: LedgerResource,
    ) -> dg.MaterializeResult:
        days = common.partition_days(context)
        wh = warehouse.get()
        # names beside ids in the tables (the ledger's budgets; ids only if it cannot be read)
        names = EntityNames(ledger_reader(ledger), context.log.warning)
        by_day = reconcile_days(wh, days, reconcile_config(settings))
        rows = [r for d in sorted(by_day) for r in by_day[d]]
        written = write_reconciliation(wh, days, rows, common.load_id(context))
        summary = summarize(rows, worst=settings.budgets.worst_rows_shown)
        context.log.info(
            f"reconciliation {common.day_span(days)}: {written} rows, {summary.breaks} break(s), "
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
        common.record_days(context, lambda d: _day_metadata(by_day.get(d, []), settings, names))
        providers_shown = ", ".join(p.name for p in providers) or "none"
        return dg.MaterializeResult(
            metadata={"providers": dg.MetadataValue.text(providers_shown)}, check_results=checks
        )

    return usage_reconciliation


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(assets=[build_reconciliation_asset(settings)])
