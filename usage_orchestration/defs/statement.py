"""``monthly_statement``: a month per entity and provider, on the monthly partitions.

Thin: the SQL and the files live in ``warehouse/statement.py``, the model in
``core/statement.py``, the page in ``core/statement_html.py``. A month's partition reads every
day of the month of ``budget_status``, ``usage_reconciliation`` and ``provider_cap_status``
(the default time-window mapping: the days inside the month), replaces the month's rows of
``monthly_statement`` in one transaction and rewrites ``<state_dir>/statements/
statement_YYYY-MM.{csv,html}``. A month still inside its late-data window materializes as
provisional (``closed`` false), never fails for being early.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg

from usage_orchestration.core.dates import month_start
from usage_orchestration.core.money import credits_metadata
from usage_orchestration.core.statement import Statement, build_statement
from usage_orchestration.defs import common
from usage_orchestration.defs.partitions import monthly_partitions_of
from usage_orchestration.defs.resources import WarehouseResource, warehouse_kind
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.statement import (
    break_lines,
    budget_days,
    cap_lines,
    export_statement,
    provider_lines,
    write_statement,
)
from usage_orchestration.warehouse.store import Warehouse

MONTHLY_STATEMENT = dg.AssetKey("monthly_statement")
STATEMENT_JOB = "monthly_statement_job"
ENTITY_COLUMNS = [
    *("entity_name", "entity_id"),  # who
    *("monthly_budget", "credits_used", "budget_percent"),  # the budget, month to date
    *("forecast_month_end", "forecast_overrun"),  # and at month end
    *("credits_charged", "expected_credits", "delta_credits", "break_rows", "breaks"),  # reconciled
]


def statements_dir(settings: UsageSettings) -> Path:
    return common.files_dir(settings, "statements")


def _month_days() -> dg.TimeWindowPartitionMapping:
    # A month reads its days; days before the daily partitions' start are simply absent.
    return dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)


def compute_statement(wh: Warehouse, month: Any, settings: UsageSettings) -> Statement:
    days = budget_days(wh, month)
    as_of = max((d.as_of_date for d in days), default=None)
    return build_statement(
        month,
        days,
        provider_lines(wh, month),
        break_lines(wh, month),
        cap_lines(wh, as_of),
        now=datetime.now(UTC),
        late_days=settings.budgets.late_data_days,
    )


def _metadata(s: Statement, csv_path: Path, html_path: Path, rows: int) -> dict[str, Any]:
    # table() shows the credits columns at 2 decimals (the warehouse table keeps all 12)
    entities = [r for r in s.records("") if r["provider"] == "all"]
    html = html_path.resolve()
    meta: dict[str, Any] = {
        "month": dg.MetadataValue.text(s.month_key),
        "closed": s.closed,
        "state": dg.MetadataValue.text(
            "closed"
            if s.closed
            else f"provisional until {s.closes_at.isoformat()} (late-data window of "
            f"{s.late_days} days)"
        ),
        "as_of": dg.MetadataValue.text(s.as_of.isoformat() if s.as_of else "no day materialized"),
        "days_materialized": s.days_materialized,
        "rows": rows,
        "entities": len(s.entities),
        "over_budget": sum(1 for e in s.entities if e.budget and e.budget.over_budget),
        "credits_used": credits_metadata(
            sum((e.budget.credits_used for e in s.entities if e.budget), Decimal(0))
        ),
        "break_rows": sum(n for n, _ in s.breaks_by_status().values()),
        "statement": common.table(entities, ENTITY_COLUMNS, limit=50),
        "html": dg.MetadataValue.path(str(html)),
        "html_url": dg.MetadataValue.url(html.as_uri()),
        "csv": dg.MetadataValue.path(str(csv_path.resolve())),
    }
    return meta


def build_statement_asset(settings: UsageSettings) -> dg.AssetsDefinition:
    @dg.asset(
        key=MONTHLY_STATEMENT,
        partitions_def=monthly_partitions_of(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetDep(common.BUDGET_STATUS, partition_mapping=_month_days()),
            dg.AssetDep(common.RECONCILIATION, partition_mapping=_month_days()),
            dg.AssetDep(common.PROVIDER_CAP_STATUS, partition_mapping=_month_days()),
        ],
        kinds={"python", warehouse_kind(settings.warehouse_url), "html"},
        owners=common.owners(settings),
        tags={"provider": common.ALL_PROVIDERS},
        group_name="finops",
        description="The month per entity and provider: usage, credits charged and expected, "
        "reconciliation breaks by status with their delta, budget, percent used, forecast at "
        "month end (budget_status of the month's last materialized day), provider caps; table "
        "monthly_statement, a CSV and an HTML page with a burn-down plot per entity. "
        "Provisional until month end + the late-data window. docs/statement.md.",
    )
    def monthly_statement(
        context: dg.AssetExecutionContext,
        settings: dg.ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        wh = warehouse.get()
        meta: dict[str, Any] = {}
        files: dict[str, Any] = {}
        # a single-run backfill of several months handles each of them
        for key in context.partition_keys:
            month = month_start(datetime.fromisoformat(key).date())
            s = compute_statement(wh, month, settings)
            rows = write_statement(wh, s, common.load_id(context))
            csv_path, html_path = export_statement(wh, statements_dir(settings), s)
            context.log.info(
                f"statement {s.month_key} ({s.state}, as of {s.as_of}): {len(s.entities)} "
                f"entities, {rows} rows; {html_path}"
            )
            meta = _metadata(s, csv_path, html_path, rows)  # the last month's figures
            files[f"html_{s.month_key.replace('-', '_')}"] = dg.MetadataValue.path(
                str(html_path.resolve())
            )
        if len(files) > 1:
            meta |= files  # every month's page when a range ran as one run
        return dg.MaterializeResult(metadata=meta)

    return monthly_statement


def _months_to_refresh(today: Any, late_days: int) -> list[Any]:
    """Yesterday's month (provisional while it runs), and the month whose late-data window is
    ending (its last run after the window closes it)."""
    yesterday = today - timedelta(days=1)
    closing = today - timedelta(days=late_days + 1)
    return sorted({month_start(yesterday), month_start(closing)})


def build_statement_schedule(settings: UsageSettings, job: Any) -> dg.ScheduleDefinition:
    late_days = settings.budgets.late_data_days

    @dg.schedule(
        job=job,
        cron_schedule="0 14 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="At 14:00 UTC (after the late-data refresh): yesterday's month as a "
        "provisional statement, and the previous month until its late-data window has closed it.",
    )
    def monthly_statement_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        today = context.scheduled_execution_time.date()
        return [
            dg.RunRequest(
                run_key=f"statement-{m.isoformat()}-{today.isoformat()}",
                partition_key=m.isoformat(),
            )
            for m in _months_to_refresh(today, late_days)
        ]

    return monthly_statement_schedule


def definitions(settings: UsageSettings) -> dg.Definitions:
    job = dg.define_asset_job(
        STATEMENT_JOB,
        selection=dg.AssetSelection.assets(MONTHLY_STATEMENT),
        description="The monthly statement of one month (table, CSV, HTML).",
    )
    return dg.Definitions(
        assets=[build_statement_asset(settings)],
        jobs=[job],
        schedules=[build_statement_schedule(settings, job)],
    )
