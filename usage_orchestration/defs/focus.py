"""``focus_costs``: provider usage as a FOCUS 1.0 dataset, in the warehouse and as monthly files.

Thin: the SQL and the files live in ``warehouse/focus.py``, the column mapping in
``core/focus.py``. Each run replaces its days of ``focus_cost_row`` in one transaction, then
rewrites the CSV and Parquet file of every month it touched (``<state_dir>/focus/``). Both stream
(a chunk of days, a batch of rows at a time): a year's range needs no more memory than a month's;
what is kept per day is its figures (``DayFigures``), not its rows.
"""

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from usage_orchestration.core.dates import month_start
from usage_orchestration.core.focus import FOCUS_VERSION, ChargeUsage, DayFigures, focus_row
from usage_orchestration.core.mapping import MappingResolver
from usage_orchestration.core.money import credits_metadata
from usage_orchestration.defs import common
from usage_orchestration.defs.resources import WarehouseResource, warehouse_kind
from usage_orchestration.providers.registry import enabled_providers
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.focus import export_month, focus_cost_row, replace_focus_days

FOCUS_COSTS = dg.AssetKey("focus_costs")
PREVIEW_COLUMNS = [
    "ChargePeriodStart",
    "ProviderName",
    "ServiceName",
    "ResourceId",
    "x_Metric",
    "PricingQuantity",
    "PricingUnit",
    "BilledCost",
    "BillingCurrency",
    "x_CreditsListCost",
    "x_EntityId",
    "x_CostStatus",
]


def export_dir(settings: UsageSettings) -> Path:
    return common.files_dir(settings, "focus")


def _day_metadata(fig: DayFigures) -> dict[str, Any]:
    """One day's FOCUS figures (each partition its own, so plots over time are real series)."""
    unknown = fig.unknown_by_provider
    meta: dict[str, Any] = {
        "rows": fig.rows,
        "rows_exportable": fig.rows_exportable,
        # FOCUS allows no null cost: these rows stay in the table, out of the files
        "rows_cost_unknown": sum(unknown.values()),
        "cost_unknown_providers": dg.MetadataValue.text(
            ", ".join(f"{p} ({n})" for p, n in sorted(unknown.items())) or "none"
        ),
        # credits and costs as people read them: 2 decimals of the exact sum (core/money.py)
        "billed_cost": credits_metadata(fig.billed_cost),
        "credits_list_cost": credits_metadata(fig.credits_list_cost),
        "preview": common.table(fig.preview, PREVIEW_COLUMNS),
    }
    for provider, n in sorted(fig.by_provider.items()):
        meta[f"rows_{provider}"] = n
    return meta


def _month_files(files: dict[str, Any], day: date) -> dict[str, Any]:
    suffix = day.strftime("%Y_%m")
    return {k: v for k, v in files.items() if k.endswith(suffix)}


def _export(wh: Any, settings: UsageSettings, days: list[date]) -> dict[str, Any]:
    """Rewrite the files of every month the run touched; their paths for the metadata."""
    files: dict[str, Any] = {}
    for month in sorted({month_start(d) for d in days}):
        csv_path, parquet_path, n = export_month(wh, export_dir(settings), month)
        key = month.strftime("%Y_%m")
        files[f"export_csv_{key}"] = dg.MetadataValue.path(str(csv_path.resolve()))
        files[f"export_parquet_{key}"] = dg.MetadataValue.path(str(parquet_path.resolve()))
        files[f"export_rows_{key}"] = n
    return files


def build_focus_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    @common.daily_asset(
        key=FOCUS_COSTS,
        deps=common.provider_deps(enabled_providers(settings)),
        kinds={"python", warehouse_kind(settings.warehouse_url), "parquet"},
        group="finops",
        table=focus_cost_row,
        description="Provider usage as FOCUS 1.0 cost and usage rows (table focus_cost_row, "
        "a day's rows replaced atomically) and one CSV and Parquet file per month; rows whose "
        "provider cost is unknown stay in the table (x_CostStatus=unknown), out of the files. "
        "Columns and sources: docs/focus.md.",
    )
    # the settings are the builder's (they chose the deps and kinds), not a resource of their own
    def focus_costs(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        days = common.partition_days(context)
        wh = warehouse.get()
        providers = [p.name for p in enabled_providers(settings)]
        # preview rows only for the days that show them (a long range: its last day)
        shown = common.preview_days(days)
        figures = {
            d: DayFigures(preview=20 if d in shown else 0, columns=PREVIEW_COLUMNS) for d in days
        }
        mappings = MappingResolver(settings.mappings)  # one per run: each key resolved once

        def build(charges: list[ChargeUsage]) -> list[dict[str, Any]]:
            rows = [focus_row(u, mappings, settings.rate_card) for u in charges]
            for r in rows:
                figures[r["usage_date"]].add(r)
            return rows

        written = replace_focus_days(wh, days, providers, build, common.load_id(context))
        files = _export(wh, settings, days)
        context.log.info(
            f"focus_costs {common.day_span(days)}: {written} rows, files {sorted(files)}"
        )
        # each day its month's files (the run may touch several months)
        common.record_days(context, lambda d: _day_metadata(figures[d]) | _month_files(files, d))
        return dg.MaterializeResult(metadata={"focus_version": FOCUS_VERSION})

    return focus_costs


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(assets=[build_focus_asset(settings)])
