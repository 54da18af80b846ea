"""The daily job and its schedules: yesterday every morning, and a late-data refresh."""

from datetime import timedelta

import dagster as dg

from usage_orchestration.settings import UsageSettings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# Every daily-partitioned asset, upstream first: providers, ledger, reconciliation, budgets.
# Not the monthly statement: a job has one partitioning (it has its own job, defs/statement.py).
daily_usage_job = dg.define_asset_job(
    "daily_usage_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("monthly_statement"),
    description="Providers → ledger → reconciliation → budgets for one day (or a range as one run).",
)


# Yesterday's partition at 06:00 UTC: Phala bills per minute and Neon refreshes every ~15 min,
# so yesterday has settled by then.
@dg.schedule(
    job=daily_usage_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Materializes yesterday's partition of every asset at 06:00 UTC.",
)
def daily_usage_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = context.scheduled_execution_time.date() - timedelta(days=1)
    return dg.RunRequest(
        run_key=f"daily-{yesterday.isoformat()}", partition_key=yesterday.isoformat()
    )


def late_data_refresh_of(late_days: int) -> dg.ScheduleDefinition:
    """The trailing ``late_days`` days (``budgets.late_data_days``) as one run at 13:30 UTC."""

    @dg.schedule(
        name="late_data_refresh",
        job=daily_usage_job,
        cron_schedule="30 13 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-materializes the trailing {late_days} days as one run at 13:30 UTC, "
        "after Forge's daily 12:00 UTC refresh and any late provider corrections.",
    )
    def late_data_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        today = context.scheduled_execution_time.date()
        start, end = today - timedelta(days=late_days), today - timedelta(days=1)
        return dg.RunRequest(
            run_key=f"late-data-{today.isoformat()}",
            tags={
                RANGE_START_TAG: start.isoformat(),
                RANGE_END_TAG: end.isoformat(),
                "usage/refresh": "late-data",
            },
        )

    return late_data_refresh


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[daily_usage_job],
        schedules=[daily_usage_schedule, late_data_refresh_of(settings.budgets.late_data_days)],
    )
