"""``forge_usage``: Atlassian Forge app resource usage, one daily partition per UTC day."""

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal

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
from sqlalchemy import func, select

from usage_orchestration.defs.common import day_span, load_id, md_table, partition_days
from usage_orchestration.defs.partitions import daily_partitions
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.provider_load import store_fetch, usage_totals
from usage_orchestration.providers.forge import PROVIDER, ForgeClient, client_from_settings
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.schema import provider_usage
from usage_orchestration.warehouse.store import Warehouse


class ForgeApiResource(ConfigurableResource):
    """Forge credentials: the Atlassian account's ``email`` (FORGE_EMAIL) and API token
    (FORGE_API_TOKEN); the account must own the apps."""

    email: str
    api_token: str

    def client(
        self,
        settings: UsageSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        today: Callable[[], date] | None = None,
    ) -> ForgeClient:
        return client_from_settings(
            settings.forge,
            self.email,
            self.api_token,
            settings.state_dir,
            transport=transport,
            today=today,
        )


def cap_month_to_date(
    warehouse: Warehouse, settings: UsageSettings, as_of: date
) -> list[dict[str, object]]:
    """Per Forge provider cap (e.g. the free 100,000 GB-seconds of function compute): the month's
    usage through ``as_of`` (every app, every group), summed in SQL."""
    out: list[dict[str, object]] = []
    t = provider_usage
    month_start = as_of.replace(day=1)
    with warehouse.engine.connect() as conn:
        for cap in settings.budgets.provider_caps:
            if cap.provider != PROVIDER:
                continue
            used = conn.execute(
                select(func.coalesce(func.sum(t.c.consumed_quantity), 0)).where(
                    t.c.provider == PROVIDER,
                    t.c.metric == cap.metric,
                    t.c.consumed_unit == cap.unit,
                    t.c.usage_date >= month_start,
                    t.c.usage_date <= as_of,
                )
            ).scalar_one()
            used = Decimal(str(used))
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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


@asset(
    partitions_def=daily_partitions,
    # A backfill range is one run: one request series per (app, resource) for the whole range.
    backfill_policy=BackfillPolicy.single_run(),
    # One Forge step at a time across runs (dagster.yaml pools); the client's request budget,
    # shared through a file under settings.state_dir, keeps every process under 5 requests/min.
    pool="forge",
    kinds={"python", "sql"},
    group_name="providers",
    description="Atlassian Forge app resource usage (FUNCTION_COMPUTE GB-seconds and any "
    "configured resource) per app, flat or grouped by site or environment, normalized into "
    "provider_usage; metadata tracks the month against the free allowance.",
)
def forge_usage(
    context: AssetExecutionContext,
    settings: ResourceParam[UsageSettings],
    forge_api: ForgeApiResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    days = partition_days(context)
    cfg = settings.forge
    series = sum(len(a.resources) for a in cfg.apps)
    context.log.info(
        f"forge: fetching {len(cfg.apps)} app(s), {series} series, for {day_span(days)}"
    )
    with forge_api.client(settings) as client:
        result = client.fetch_days(cfg.apps, days)
        budget_wait_s = client.http.stats.budget_wait_s
    wh = warehouse.get()
    written = store_fetch(wh, PROVIDER, days, result, settings, load_id(context))
    totals = usage_totals(wh, PROVIDER, days)
    unavailable = sorted({c.usage_date for c in result.coverage if c.status == "unavailable"})
    caps = cap_month_to_date(wh, settings, max(days)) if days else []
    context.log.info(
        f"forge: wrote {written} rows for {day_span(days)} in {result.requests} requests; "
        f"{len(unavailable)} day(s) unavailable"
    )
    meta: dict[str, object] = {
        "rows": written,
        "days": len(days),
        "days_unavailable": len(unavailable),
        "apps": len(cfg.apps),
        "requests": result.requests,
        "retries": result.retries,
        "budget_wait_s": round(budget_wait_s, 3),
        "list_cost_credits": float(sum((t["list_cost"] or 0) for t in totals)),
        "unmapped_rows": int(sum(t["rows"] - t["mapped_rows"] for t in totals)),
        "totals_by_metric": md_table(
            totals, ["metric", "consumed_unit", "rows", "quantity", "list_cost"]
        ),
        "free_allowance": md_table(
            caps, ["metric", "unit", "month", "through", "used", "allowance", "used_pct"]
        ),
        "warehouse": MetadataValue.text(warehouse.describe()),
    }
    for t in totals:
        meta[f"quantity_{t['metric']}_{t['consumed_unit']}"] = float(t["quantity"] or 0)
    for cap in caps:
        key = f"{_slug(str(cap['metric']))}_{_slug(str(cap['unit']))}"
        meta[f"month_to_date_{key}"] = float(cap["used"])  # type: ignore[arg-type]
        meta[f"free_allowance_used_pct_{key}"] = float(cap["used_pct"])  # type: ignore[arg-type]
    return MaterializeResult(metadata=meta)


def definitions(settings: UsageSettings) -> Definitions:
    return Definitions(
        assets=[forge_usage] if settings.forge.enabled else [],
        resources={
            "forge_api": ForgeApiResource(
                email=EnvVar("FORGE_EMAIL"), api_token=EnvVar("FORGE_API_TOKEN")
            )
        },
    )


__all__: Sequence[str] = ("ForgeApiResource", "cap_month_to_date", "definitions", "forge_usage")
