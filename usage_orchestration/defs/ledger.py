"""``ledger_daily_usage``: the credit ledger aggregated per day, entity, resource type and unit.

The ledger itself is the external asset ``credit_ledger`` (declared, never materialized here:
the platform writes it, this project only reads it), upstream of every asset that reads it.

Thin: the aggregation is ``LedgerReader.daily_usage`` (a SQL GROUP BY in the ledger database, or
the Usage Reporting API's own aggregation); this asset writes it into the warehouse table
``ledger_daily_usage`` and reports the License Manager sync status.

Other parts read the ledger through the same resource: declare ``ledger: LedgerResource`` and
call ``ledger_reader(ledger)`` (see docs/ledger.md).
"""

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from usage_orchestration.core.dates import month_of
from usage_orchestration.core.money import credits_metadata
from usage_orchestration.defs import common
from usage_orchestration.defs.resources import (
    WarehouseResource,
    database_url_config,
    warehouse_kind,
)
from usage_orchestration.ledger.base import LedgerDailyUsage, LedgerReader, SyncStatus
from usage_orchestration.ledger.factory import make_ledger_reader, sql_ledger, sync_problem
from usage_orchestration.ledger.sql import LedgerError
from usage_orchestration.providers.http import ProviderError
from usage_orchestration.settings import LedgerSettings, UsageSettings
from usage_orchestration.settings.secrets import LEDGER_API_TOKEN, LEDGER_DATABASE_URL_ENV
from usage_orchestration.warehouse.ledger_load import (
    LEDGER_UNAVAILABLE,
    ledger_coverage,
    store_ledger_days,
    usage_by_day,
)
from usage_orchestration.warehouse.schema import ledger_daily_usage as ledger_daily_usage_table
from usage_orchestration.warehouse.store import safe_url

TOKEN_ENV = LEDGER_API_TOKEN
DATABASE_URL_ENV = LEDGER_DATABASE_URL_ENV
SYNC_CHECK = "ledger_license_sync"


class LedgerResource(dg.ConfigurableResource):
    """Where the credit ledger is read: ``backend`` ``sql`` (``database_url``, read only) or
    ``http`` (the Usage Reporting API at ``api_base_url`` with ``api_token`` from
    LEDGER_API_TOKEN)."""

    backend: str = "sql"
    database_url: str = "sqlite:///.data/ledger.sqlite"
    api_base_url: str = "http://127.0.0.1:8765/ledger"
    timeout_s: float = 30.0
    max_attempts: int = 5
    retry_after_cap_s: float = 60.0
    api_token: str | None = None

    def reader(self) -> LedgerReader:
        if self.backend == "sql":
            return sql_ledger(self.database_url)
        # the resource carries every ledger setting (and the token beside them)
        cfg = LedgerSettings(**{name: getattr(self, name) for name in LedgerSettings.model_fields})
        return make_ledger_reader(cfg, self.api_token)

    def describe(self) -> str:
        if self.backend == "sql":
            return f"sql {safe_url(self.database_url)}"
        return f"http {self.api_base_url}"


def ledger_reader(ledger: LedgerResource) -> LedgerReader:
    """The configured ``LedgerReader`` (SQL or HTTP) for an asset that declared the resource."""
    return ledger.reader()


class EntityNames:
    """Entity id → name, from the ledger's budgets of each month (one query per month, cached):
    for metadata tables that show names beside ids. Best effort: an entity without a budget
    that month, or a ledger that cannot be read, shows its id only (the latter logged once)."""

    def __init__(self, reader: LedgerReader, warn: Callable[[str], None]) -> None:
        self._reader = reader
        self._warn = warn
        self._months: dict[str, dict[str, str]] = {}
        self._failed = False

    def name(self, entity_id: str, day: date) -> str | None:
        month = month_of(day)
        if month not in self._months:
            self._months[month] = self._load(month)
        return self._months[month].get(entity_id)

    def _load(self, month: str) -> dict[str, str]:
        if self._failed:
            return {}
        try:
            return {b.entity_id: b.name for b in self._reader.budgets(month) if b.name}
        except (LedgerError, ProviderError) as exc:
            self._failed = True
            self._warn(f"ledger: entity names unavailable, tables show ids only: {exc}")
            return {}


def _sync_metadata(status: SyncStatus | None, problem: str | None) -> dict[str, Any]:
    def ts(dt: datetime | None) -> str:
        return dt.isoformat() if dt else ""

    meta: dict[str, Any] = {
        "sync_ok": problem is None,
        "sync_problem": dg.MetadataValue.text(problem or ""),
    }
    if status is not None:
        meta["sync_synced_at"] = dg.MetadataValue.text(ts(status.synced_at))
        meta["sync_last_failed_at"] = dg.MetadataValue.text(ts(status.last_sync_failed_at))
        meta["sync_failure_code"] = dg.MetadataValue.text(status.last_sync_failure_code or "")
        meta["sync_staleness_level"] = dg.MetadataValue.text(status.staleness_level or "")
        if status.synced_at is not None:
            age = (datetime.now(UTC) - status.synced_at).total_seconds() / 3600
            meta["sync_age_hours"] = round(age, 2)
    return meta


SYNC_CHECK_SPEC = dg.AssetCheckSpec(
    SYNC_CHECK,
    asset=common.LEDGER_DAILY_USAGE,
    description="The ledger's License Manager sync succeeded last time (a failed or stale "
    "sync means ledger figures may lag).",
)


def ledger_kind(settings: UsageSettings) -> str:
    """The Dagster kind naming where the ledger is read: its database (``postgres``,
    ``sqlite``) or, with the HTTP backend, the Usage Reporting API."""
    if settings.ledger.backend == "sql":
        return warehouse_kind(settings.ledger.database_url)
    return "api"


def ledger_location(settings: UsageSettings) -> str:
    """Where the ledger is read, without any password."""
    if settings.ledger.backend == "sql":
        return f"sql {safe_url(settings.ledger.database_url)}"
    return f"http {settings.ledger.api_base_url}"


def credit_ledger_spec(settings: UsageSettings) -> dg.AssetSpec:
    """The credit ledger as an external asset: in the lineage, never materialized here."""
    return dg.AssetSpec(
        common.CREDIT_LEDGER,
        description="The platform's append-only credit ledger (usage events, budgets, credit "
        "pool, License Manager sync), written by the platform and only read here, through a "
        "read-only connection or the Usage Reporting API.",
        kinds={ledger_kind(settings)},
        owners=common.owners(settings),
        tags={"provider": common.ALL_PROVIDERS},  # it holds every provider's usage events
        group_name="ledger",
        metadata={"location": dg.MetadataValue.text(ledger_location(settings))},
    )


def build_ledger_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    """``ledger_daily_usage``; its kinds name the ledger's system and the warehouse's."""

    @common.daily_asset(
        key=common.LEDGER_DAILY_USAGE,
        deps=[dg.AssetDep(common.CREDIT_LEDGER)],
        pool="ledger",
        kinds={ledger_kind(settings), warehouse_kind(settings.warehouse_url)},
        group="ledger",
        settings=settings,
        check_specs=[SYNC_CHECK_SPEC],
        table=ledger_daily_usage_table,
        description="Credit ledger usage_event aggregated per day, entity, resource type and "
        "unit (SQL GROUP BY in the ledger database, or the Usage Reporting API); a day's rows "
        "are replaced atomically on every materialization. A day without any event is ledger "
        "coverage unavailable (metadata ledger_coverage): reconciliation reports it as "
        "ledger_unavailable, not as leaks.",
    )
    def ledger_daily_usage(
        context: dg.AssetExecutionContext,
        ledger: LedgerResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        return _materialize_ledger_days(context, ledger, warehouse)

    return ledger_daily_usage


def _materialize_ledger_days(
    context: dg.AssetExecutionContext, ledger: LedgerResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    days = common.partition_days(context)
    reader = ledger_reader(ledger)
    context.log.info(f"ledger: reading {common.day_span(days)} from {ledger.describe()}")
    # one transaction for the whole range
    usage = store_ledger_days(reader, warehouse.get(), days, common.load_id(context))
    status, problem = _sync_health(reader)
    if problem:
        context.log.warning(f"ledger: {problem}")
    by_day = usage_by_day(usage, days)
    empty = [d for d in days if ledger_coverage(by_day[d]) == LEDGER_UNAVAILABLE]
    if empty:
        # no event at all for the platform: a ledger or sync problem, which reconciliation
        # reports as ledger_unavailable (not as revenue leaks)
        context.log.warning(
            f"ledger: coverage unavailable (no events at all) on {len(empty)} day(s): "
            + ", ".join(d.isoformat() for d in empty[:10])
        )
    context.log.info(
        f"ledger: wrote {len(usage)} rows ({sum(u.events for u in usage)} events) "
        f"for {common.day_span(days)}"
    )
    # each partition gets its own day's figures; the result holds what is true of every day
    common.record_days(context, lambda d: _usage_metadata(by_day[d]))
    meta: dict[str, Any] = {
        "backend": dg.MetadataValue.text(ledger.backend),
        "ledger": dg.MetadataValue.text(ledger.describe()),
        **_sync_metadata(status, problem),
    }
    return dg.MaterializeResult(
        metadata=meta,
        check_results=[
            dg.AssetCheckResult(
                check_name=SYNC_CHECK,
                passed=problem is None,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"problem": dg.MetadataValue.text(problem or "")},
            )
        ],
    )


def _sync_health(reader: LedgerReader) -> tuple[SyncStatus | None, str | None]:
    """The License Manager sync status and what is wrong with it (None: healthy)."""
    try:
        status = reader.sync_status()
    except (LedgerError, ProviderError) as exc:
        return None, f"sync status unavailable: {exc}"
    return status, sync_problem(status)


def _totals_by_resource_type(usage: Sequence[LedgerDailyUsage]) -> list[dict[str, Any]]:
    """The written rows summed per (resource type, unit): a handful per day, summed here."""
    by_rt: dict[tuple[str, str], dict[str, Any]] = {}
    for u in usage:
        acc = by_rt.setdefault(
            (u.resource_type, u.unit or ""),
            {
                "resource_type": u.resource_type,
                "unit": u.unit or "",
                "rows": 0,
                "events": 0,
                "quantity": None,
                "credits": 0,
            },
        )
        acc["rows"] += 1
        acc["events"] += u.events
        acc["credits"] += u.credits
        if u.quantity is not None:
            acc["quantity"] = (acc["quantity"] or 0) + u.quantity
    return sorted(by_rt.values(), key=lambda a: (a["resource_type"], a["unit"]))


def _usage_metadata(usage: Sequence[LedgerDailyUsage]) -> dict[str, Any]:
    """One day's figures (numbers, so the UI plots them over the partitions)."""
    totals = _totals_by_resource_type(usage)
    meta: dict[str, Any] = {
        "ledger_coverage": dg.MetadataValue.text(ledger_coverage(usage)),
        "rows": len(usage),
        "events": sum(u.events for u in usage),
        "credits_total": credits_metadata(sum((u.credits for u in usage), Decimal(0))),
        "entities": len({u.entity_id for u in usage}),
        "by_resource_type": common.table(
            totals, ["resource_type", "unit", "rows", "events", "quantity", "credits"]
        ),
    }
    for t in totals:
        meta[f"credits_{t['resource_type']}"] = credits_metadata(t["credits"])
    return meta


def definitions(settings: UsageSettings) -> dg.Definitions:
    cfg = settings.ledger
    return dg.Definitions(
        assets=[credit_ledger_spec(settings), build_ledger_asset(settings)],
        resources={
            "ledger": LedgerResource(
                backend=cfg.backend,
                # a password-holding URL as EnvVar: never stored by Dagster
                database_url=database_url_config(
                    "ledger.database_url", DATABASE_URL_ENV, cfg.database_url
                ),
                api_base_url=cfg.api_base_url,
                timeout_s=cfg.timeout_s,
                max_attempts=cfg.max_attempts,
                retry_after_cap_s=cfg.retry_after_cap_s,
                # Only the HTTP backend needs the token: the SQL backend works without it set.
                api_token=dg.EnvVar(TOKEN_ENV) if cfg.backend == "http" else None,
            )
        },
    )
