"""The daily job and its schedules: which partitions they ask for, and when."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import RunRequest, build_schedule_context

from usage_orchestration.defs.jobs import daily_usage_schedule, late_data_refresh_of
from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import load_settings


def test_daily_schedule_asks_for_yesterday() -> None:
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def("daily_usage_job")
    # every partitioned asset of the code location is in the job
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "phala_usage",
        "neon_usage",
        "forge_usage",
        "ledger_daily_usage",
        "usage_reconciliation",
        "budget_status",
    }
    schedule = defs.resolve_schedule_def("daily_usage_schedule")
    ctx = build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, 6, 0, tzinfo=UTC))
    request = daily_usage_schedule(ctx)
    assert request.partition_key == "2026-02-28"  # month boundary, not a leap year
    assert request.run_key == "daily-2026-02-28"
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"


def test_late_data_refresh_reruns_the_trailing_three_days_as_one_run() -> None:
    ctx = build_schedule_context(scheduled_execution_time=datetime(2028, 3, 1, 13, 30, tzinfo=UTC))
    request = late_data_refresh_of(3)(ctx)
    assert isinstance(request, RunRequest)
    assert request.tags["dagster/asset_partition_range_start"] == "2028-02-27"
    assert request.tags["dagster/asset_partition_range_end"] == "2028-02-29"  # leap day included
    assert request.run_key == "late-data-2028-03-01"  # one run per day, even if evaluated twice


def test_the_late_data_window_is_the_setting_the_statement_closes_by() -> None:
    settings = load_settings().model_copy(deep=True)
    settings.budgets.late_data_days = 5
    schedule = build_definitions(settings).resolve_schedule_def("late_data_refresh")
    ctx = build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 13, 30, tzinfo=UTC))
    request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-05"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-09"
