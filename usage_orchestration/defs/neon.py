"""``neon_usage``: Neon consumption metrics (v2), one daily partition per UTC day."""

from collections.abc import Callable
from datetime import datetime

import httpx
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    ConfigurableResource,
    Definitions,
    EnvVar,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)

from usage_orchestration.defs.common import day_span, load_id, md_table, partition_days
from usage_orchestration.defs.partitions import daily_partitions
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.provider_load import store_fetch, usage_totals
from usage_orchestration.providers.neon import NeonClient, client_from_settings
from usage_orchestration.settings import UsageSettings


class NeonApiResource(ConfigurableResource):
    """Neon credentials: ``api_key`` from NEON_API_KEY (an organization API key)."""

    api_key: str

    def client(
        self,
        settings: UsageSettings,
        *,
        now: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> NeonClient:
        return client_from_settings(
            settings.neon, self.api_key, settings.state_dir, now=now, transport=transport
        )


@asset(
    partitions_def=daily_partitions,
    # A backfill range is one run: one request per project chunk and page for the whole range.
    backfill_policy=BackfillPolicy.single_run(),
    # One Neon step at a time across runs (dagster.yaml pools); the client's request budget,
    # shared through a file under settings.state_dir, keeps every process under the rate limit.
    pool="neon",
    kinds={"python", "sql"},
    group_name="providers",
    description="Neon consumption metrics v2 (compute CU-hours, storage GB-months, transfer GB) "
    "per project, normalized into provider_usage. Days outside Neon's 60-day daily window are "
    "recorded as unavailable with the reason, never as zero usage.",
)
def neon_usage(
    context: AssetExecutionContext,
    settings: ResourceParam[UsageSettings],
    neon_api: NeonApiResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    days = partition_days(context)
    cfg = settings.neon
    scope = f"{len(cfg.project_ids)} project(s)" if cfg.project_ids else "every project"
    context.log.info(f"neon: fetching {scope} of org {cfg.org_id} for {day_span(days)}")
    with neon_api.client(settings) as client:
        result = client.fetch_days(days, outside_window=cfg.outside_window)
        budget_wait_s = client.http.stats.budget_wait_s
    wh = warehouse.get()
    written = store_fetch(wh, "neon", days, result, settings, load_id(context))
    totals = usage_totals(wh, "neon", days)
    unavailable = [c for c in result.coverage if c.status == "unavailable"]
    context.log.info(
        f"neon: wrote {written} rows for {day_span(days)} in {result.requests} requests; "
        f"{len(unavailable)} day(s) unavailable"
    )
    meta: dict[str, object] = {
        "rows": written,
        "days": len(days),
        "days_unavailable": len(unavailable),
        "projects": len({r.resource_id for r in result.rows}),
        "requests": result.requests,
        "retries": result.retries,
        "budget_wait_s": round(budget_wait_s, 3),
        "list_cost_credits": float(sum((t["list_cost"] or 0) for t in totals)),
        "unmapped_rows": int(sum(t["rows"] - t["mapped_rows"] for t in totals)),
        "totals_by_metric": md_table(
            totals, ["metric", "consumed_unit", "rows", "quantity", "list_cost"]
        ),
        "unavailable_days": md_table(
            [{"day": c.usage_date.isoformat(), "reason": c.reason} for c in unavailable],
            ["day", "reason"],
        ),
        "warehouse": MetadataValue.text(warehouse.describe()),
    }
    for t in totals:
        meta[f"quantity_{t['metric']}_{t['consumed_unit']}"] = float(t["quantity"] or 0)
    return MaterializeResult(metadata=meta)


def definitions(settings: UsageSettings) -> Definitions:
    return Definitions(
        assets=[neon_usage] if settings.neon.enabled else [],
        resources={"neon_api": NeonApiResource(api_key=EnvVar("NEON_API_KEY"))},
    )
