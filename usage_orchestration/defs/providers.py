"""One asset per provider, built by one factory from the provider registry.

``phala_usage``, ``neon_usage``, ``forge_usage``: the provider's usage per UTC day, normalized into
``provider_usage`` with its fetch coverage in ``provider_coverage``. A backfill range is one run
(one request series per account for the whole range); every day of the range is replaced in one
transaction. Each provider has its own pool (dagster.yaml) and its credentials resource
``<name>_api`` (secrets from the environment through ``EnvVar``).
"""

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import dagster as dg

from usage_orchestration.core.money import credits_metadata
from usage_orchestration.defs import common
from usage_orchestration.defs.resources import WarehouseResource, warehouse_kind
from usage_orchestration.providers.http import ProviderError
from usage_orchestration.providers.records import FetchStats
from usage_orchestration.providers.registry import PROVIDERS, ProviderSpec
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.analysis import caps_month_to_date
from usage_orchestration.warehouse.audit import AuditError, DayDrop
from usage_orchestration.warehouse.provider_load import (
    ALLOW_DROP_TAG,
    DropAuditError,
    LoadReport,
    store_fetch,
    usage_totals,
)
from usage_orchestration.warehouse.request_budget import request_budgets

AUDIT_CHECK = "no_unexplained_drop"
# A run in these states may have rows staged that it has yet to publish.
_RUNNING = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


class ProviderApiResource(dg.ConfigurableResource):
    """A provider's credentials (``values``: credential name → secret), each from its environment
    variable through ``EnvVar`` (the registry names them); never shown in the UI or logs."""

    values: dict[str, str] = {}


def api_resource(spec: ProviderSpec) -> ProviderApiResource:
    return ProviderApiResource(values={k: dg.EnvVar(env) for k, env in spec.secrets.items()})


def _drops_table(drops: Sequence[DayDrop]) -> dg.MetadataValue:
    return common.table(
        [
            {
                "usage_date": d.usage_date,
                "metric": d.metric,
                "unit": d.unit,
                "before": d.before,
                "after": d.after,
            }
            for d in drops
        ],
        ["usage_date", "metric", "unit", "before", "after"],
    )


def _audit_metadata(report: LoadReport) -> dict[str, Any]:
    return {
        "audit_rows_checked": report.rows_audited,
        "audit_duplicates_dropped": report.duplicates_dropped,
        "audit_days_compared": report.days_compared,
        "audit_drops_accepted": len(report.drops),
        # unanswered now, complete before: kept as the previous load left them
        "days_kept_from_previous_load": len(report.days_kept),
        "abandoned_staged_rows_cleared": report.abandoned_rows_cleared,
    }


_SPAN_COLUMNS = ["account", "reason", "days", "first_day", "last_day"]


def _unavailable_spans(unavailable: Sequence[Any]) -> list[dict[str, Any]]:
    """Unavailable account-days grouped by (account, reason): how many, first and last day."""
    spans: dict[tuple[str, str | None], list[Any]] = {}
    for c in unavailable:
        spans.setdefault((c.account_id, c.reason), []).append(c.usage_date)
    return [
        {
            "account": account,
            "reason": reason,
            "days": len(d),
            "first_day": min(d),
            "last_day": max(d),
        }
        for (account, reason), d in sorted(spans.items(), key=lambda kv: (kv[0][0], min(kv[1])))
    ]


def _totals_metadata(totals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows, costs and quantities per metric of some usage (one day's, in a range run)."""
    billed = [t["billed_cost"] for t in totals if t["billed_cost"] is not None]
    meta: dict[str, Any] = {
        "rows": int(sum(t["rows"] for t in totals)),
        "list_cost_credits": credits_metadata(sum((t["list_cost"] or 0) for t in totals)),
        "unmapped_rows": int(sum(t["rows"] - t["mapped_rows"] for t in totals)),
        "totals_by_metric": common.table(
            totals, ["metric", "consumed_unit", "rows", "quantity", "billed_cost", "list_cost"]
        ),
    }
    if billed:  # Neon and Forge answer no cost: absent, never a zero
        meta["billed_cost_usd"] = float(sum(billed))
    for t in totals:
        meta[f"quantity_{t['metric']}_{t['consumed_unit']}"] = float(t["quantity"] or 0)
    return meta


def _caps_metadata(caps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The free allowances month to date (through the run's last day)."""
    meta: dict[str, Any] = {}
    if caps:
        meta["free_allowance"] = common.table(
            caps, ["metric", "unit", "month", "through", "used", "allowance", "used_pct"]
        )
    for cap in caps:
        key = f"{common.slug(str(cap['metric']))}_{common.slug(str(cap['unit']))}"
        meta[f"month_to_date_{key}"] = float(cap["used"])
        meta[f"free_allowance_used_pct_{key}"] = float(cap["used_pct"])
    return meta


def _day_figures(
    spec: ProviderSpec,
    settings: UsageSettings,
    warehouse: WarehouseResource,
    days: Sequence[date],
    report: LoadReport,
) -> dict[date, dict[str, Any]]:
    """Each day's own figures (a range run gives every partition its day's, not the range's):
    usage per metric, the accounts unavailable that day and, on the last day, the allowances
    month to date."""
    wh = warehouse.get()
    by_day: dict[date, list[dict[str, Any]]] = {d: [] for d in days}
    for t in usage_totals(wh, spec.name, days, by_day=True):
        by_day.setdefault(t.pop("usage_date"), []).append(t)
    unavailable: dict[date, int] = {}
    for c in report.coverage:
        if c.status == "unavailable":
            unavailable[c.usage_date] = unavailable.get(c.usage_date, 0) + 1
    figures = {
        d: {**_totals_metadata(by_day[d]), "accounts_unavailable": unavailable.get(d, 0)}
        for d in days
    }
    if days:
        last = max(days)
        figures[last] |= _caps_metadata(caps_month_to_date(wh, settings, spec.name, last))
    return figures


def _metadata(
    spec: ProviderSpec,
    settings: UsageSettings,
    warehouse: WarehouseResource,
    days: Sequence[Any],
    report: LoadReport,
    stats: FetchStats,
) -> dict[str, Any]:
    """What is true of the whole run (every partition of a range shows it)."""
    unavailable = [c for c in report.coverage if c.status == "unavailable"]
    return {
        "rows_written": report.rows_written,
        "days": len(days),
        "days_unavailable": len({c.usage_date for c in unavailable}),
        "accounts": len(spec.configured_accounts(settings)),
        "requests": stats.requests,
        "retries": stats.retries,
        "budget_wait_s": round(stats.budget_wait_s, 3),
        # one row per (account, reason) with its span, not one per day: Dagster copies a range
        # run's metadata into every partition's materialization (common.run_metadata: a long
        # range's last day only)
        "unavailable_days": common.table(_unavailable_spans(unavailable), _SPAN_COLUMNS),
        "warehouse": dg.MetadataValue.text(warehouse.describe()),
        **_audit_metadata(report),
    }


def _load(
    context: dg.AssetExecutionContext,
    spec: ProviderSpec,
    settings: UsageSettings,
    credentials: ProviderApiResource,
    warehouse: WarehouseResource,
    days: Sequence[Any],
) -> tuple[LoadReport, FetchStats]:
    """Fetch, write, audit, publish, chunk by chunk: the provider's pages are staged as they
    arrive and the days published at the end in one transaction. A transient provider failure
    (after the client's own retries, or a Retry-After beyond their cap) retries the step the
    Dagster way, waiting what the provider asked for; the run is not failed (so nothing pages)
    until the retries are spent. A failed audit fails the step with what it found (nothing is
    written), a refused drop names the run tag that accepts it."""
    allow_drop = context.run.tags.get(ALLOW_DROP_TAG, "").lower() == "true"
    # runs still in progress keep their staged rows; a killed run's are cleared by this load
    live = {r.run_id for r in context.instance.get_runs(dg.RunsFilter(statuses=_RUNNING))}
    budgets = request_budgets(settings, warehouse.get())
    stream = spec.stream(settings, credentials.values, days, budgets=budgets)
    try:
        report = store_fetch(
            warehouse.get(),
            spec.name,
            days,
            stream,
            settings,
            common.load_id(context),
            allow_drop=allow_drop,
            live_loads=live,
        )
    except ProviderError as exc:
        retries = settings.step_retries
        if not exc.retryable or context.retry_number >= retries.max_retries:
            raise
        wait = exc.retry_after_s if exc.retry_after_s is not None else retries.wait_s
        context.log.warning(
            f"{spec.name}: transient failure, retrying the step in {wait:.0f} s "
            f"(retry {context.retry_number + 1} of {retries.max_retries}): {exc}"
        )
        raise dg.RetryRequested(max_retries=retries.max_retries, seconds_to_wait=wait) from exc
    except DropAuditError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"drops": _drops_table(exc.drops), "days": len(days)},
        ) from None
    except AuditError as exc:
        raise dg.Failure(description=f"audit failed, nothing written: {exc}") from None
    return report, stream.stats


def provider_asset(spec: ProviderSpec, settings: UsageSettings) -> dg.AssetsDefinition:
    """The daily usage asset of one provider."""

    # A backfill range is one run (daily_asset): one request series per account for the range.
    @common.daily_asset(
        name=spec.asset_key,
        settings=settings,
        # One step of this provider at a time across runs (dagster.yaml pools); the clients'
        # request budget (settings.request_budget: a file under state_dir or the warehouse) keeps
        # every process under the limit.
        pool=spec.pool,
        kinds={spec.name, warehouse_kind(settings.warehouse_url)},
        provider=spec.name,
        table="provider_usage",  # its column schema in the catalog (defs/common.py)
        group="providers",
        description=spec.description,
        required_resource_keys={"settings", "warehouse", spec.resource_key},
        check_specs=[
            dg.AssetCheckSpec(
                AUDIT_CHECK,
                asset=common.provider_key(spec),
                blocking=True,
                description="No day's usage vanished or fell by more than audit.max_drop_share "
                "since the last load (a load that fails it writes nothing and fails the run; "
                f"the run tag {ALLOW_DROP_TAG}=true accepts the drop).",
            )
        ],
    )
    def provider_usage_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings: UsageSettings = context.resources.settings
        warehouse: WarehouseResource = context.resources.warehouse
        credentials: ProviderApiResource = getattr(context.resources, spec.resource_key)
        days = common.partition_days(context)
        context.log.info(
            f"{spec.name}: fetching {len(spec.configured_accounts(settings))} account(s) "
            f"for {common.day_span(days)}"
        )
        report, stats = _load(context, spec, settings, credentials, warehouse, days)
        unavailable = sum(1 for c in report.coverage if c.status == "unavailable")
        context.log.info(
            f"{spec.name}: wrote {report.rows_written} rows for {common.day_span(days)} in "
            f"{stats.requests} requests; {unavailable} account-day(s) unavailable"
        )
        if report.days_kept:
            context.log.warning(
                f"{spec.name}: no account answered for {common.day_span(report.days_kept)}; the "
                "previous load's complete figures were kept for those days"
            )
        check = dg.AssetCheckResult(
            check_name=AUDIT_CHECK,
            passed=True,
            description=(
                f"{len(report.drops)} drop(s) accepted by the run tag {ALLOW_DROP_TAG}"
                if report.drop_overridden
                else None
            ),
            metadata={**_audit_metadata(report), "drops": _drops_table(report.drops)},
        )
        figures = _day_figures(spec, settings, warehouse, days, report)
        common.record_days(context, lambda d: figures[d])
        return dg.MaterializeResult(
            metadata=common.run_metadata(
                context, _metadata(spec, settings, warehouse, days, report, stats)
            ),
            check_results=[check],
        )

    return provider_usage_asset


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(
        assets=[provider_asset(p, settings) for p in PROVIDERS if p.enabled(settings)],
        resources={p.resource_key: api_resource(p) for p in PROVIDERS},
    )
