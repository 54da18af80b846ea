"""``phala_usage``: Phala Cloud metered usage, one daily partition per UTC day."""

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Definitions,
    EnvVar,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)

from usage_orchestration.defs.common import day_span, load_id, md_table, partition_days
from usage_orchestration.defs.partitions import daily_partitions
from usage_orchestration.defs.resources import PhalaApiResource, WarehouseResource
from usage_orchestration.provider_load import store_fetch, usage_totals
from usage_orchestration.settings import UsageSettings


@asset(
    partitions_def=daily_partitions,
    # A backfill range is one run: one request series per app for the whole range.
    backfill_policy=BackfillPolicy.single_run(),
    pool="phala",
    kinds={"python", "sql"},
    group_name="providers",
    description="Phala Cloud CVM metered usage (compute, storage) per app, normalized into "
    "provider_usage; a day's rows are replaced atomically on every materialization.",
)
def phala_usage(
    context: AssetExecutionContext,
    settings: ResourceParam[UsageSettings],
    phala_api: PhalaApiResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    days = partition_days(context)
    cfg = settings.phala
    context.log.info(f"phala: fetching {len(cfg.app_ids)} app(s) for {day_span(days)}")
    with phala_api.client(cfg) as client:
        result = client.fetch_days(cfg.app_ids, days)
    wh = warehouse.get()
    written = store_fetch(wh, "phala", days, result, settings, load_id(context))
    totals = usage_totals(wh, "phala", days)
    context.log.info(
        f"phala: wrote {written} rows for {day_span(days)} in {result.requests} requests"
    )
    meta: dict[str, object] = {
        "rows": written,
        "days": len(days),
        "apps": len(cfg.app_ids),
        "requests": result.requests,
        "retries": result.retries,
        "billed_cost_usd": float(sum((t["billed_cost"] or 0) for t in totals)),
        "unmapped_rows": int(sum(t["rows"] - t["mapped_rows"] for t in totals)),
        "totals_by_metric": md_table(
            totals, ["metric", "consumed_unit", "rows", "quantity", "billed_cost"]
        ),
        "warehouse": MetadataValue.text(warehouse.describe()),
    }
    for t in totals:
        meta[f"quantity_{t['metric']}_{t['consumed_unit']}"] = float(t["quantity"] or 0)
    return MaterializeResult(metadata=meta)


def definitions(settings: UsageSettings) -> Definitions:
    return Definitions(
        assets=[phala_usage] if settings.phala.enabled else [],
        resources={"phala_api": PhalaApiResource(api_key=EnvVar("PHALA_API_KEY"))},
    )
