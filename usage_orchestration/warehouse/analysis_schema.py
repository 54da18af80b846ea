"""Tables computed from provider usage and the ledger: reconciliation, budgets, pool, anomalies.

Each is replaced per day (``as_of_date`` / ``usage_date``) in one transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Date, Integer, PrimaryKeyConstraint, String, Table, Text

from usage_orchestration.warehouse.schema import MONEY, QUANTITY, load_id_column, metadata


def month_day_columns() -> tuple[Column[Any], ...]:
    """The day a month-to-date status row is as of, and its month (YYYY-MM)."""
    return Column("as_of_date", Date, nullable=False), Column("month", String(7), nullable=False)


def statement_key_columns() -> tuple[Column[Any], ...]:
    """The key every statement row starts with: the month (YYYY-MM), the entity ("" for
    unmapped usage), the provider ("all" on the entity's own line) and the resource type ("" on
    the entity's line)."""
    return (
        Column("month", String(7), nullable=False),
        Column("entity_id", String(128), nullable=False),
        Column("provider", String(32), nullable=False),
        Column("resource_type", String(64), nullable=False),
    )


STATEMENT_KEY = tuple(c.name for c in statement_key_columns())


usage_reconciliation = Table(
    "usage_reconciliation",
    metadata,
    Column("usage_date", Date, nullable=False),
    Column("entity_id", String(128), nullable=False),  # "" for unmapped usage
    Column("entity_type", String(64)),
    Column("resource_type", String(64), nullable=False),  # provider metric for unmapped usage
    Column("provider", String(32), nullable=False),
    Column("ledger_unit", String(64)),
    Column("expected_quantity", QUANTITY),
    Column("expected_credits", MONEY),
    Column("recorded_quantity", QUANTITY),
    Column("recorded_credits", MONEY),
    Column("delta_quantity", QUANTITY),
    Column("delta_credits", MONEY),  # recorded - expected; < 0 is a leak
    Column("delta_pct", QUANTITY),
    Column("status", String(32), nullable=False),
    Column("within_tolerance", Boolean, nullable=False),
    Column("reason", Text),
    load_id_column(),
    # added with issue 5: how much data each side holds, and whether credits were compared
    Column("provider_rows", Integer),
    Column("ledger_events", Integer),
    Column("compared_on", String(16)),  # quantity | credits (HTTP ledger: no quantities)
    Column("blocking", Boolean),  # the resource type's rate card says a break stops downstream
    PrimaryKeyConstraint(
        "usage_date", "provider", "entity_id", "resource_type", name="pk_usage_reconciliation"
    ),
)

budget_status = Table(
    "budget_status",
    metadata,
    *month_day_columns(),
    Column("entity_id", String(128), nullable=False),
    Column("entity_type", String(64)),
    Column("entity_name", String(256)),
    Column("credits_used", MONEY, nullable=False),  # month to date, through as_of_date
    Column("monthly_budget", MONEY),  # null: no budget
    Column("budget_percent", QUANTITY),
    Column("budget_remaining", MONEY),
    Column("over_budget", Boolean, nullable=False),
    Column("highest_threshold_crossed", QUANTITY),  # e.g. 80 for 80 %; null if none
    Column("days_of_data", Integer, nullable=False),
    Column("forecast_month_end", MONEY),  # null until forecast_min_days of data
    Column("forecast_overrun", MONEY),  # forecast - budget when positive
    load_id_column(),
    # added with issue 5
    Column("thresholds_crossed", Text),  # e.g. "50,80" (percent), "" when none
    Column("forecast_percent", QUANTITY),  # forecast / budget × 100
    Column("days_elapsed", Integer),  # day of month of as_of_date
    Column("days_in_month", Integer),
    # added with issue 13: configured | no_budget | not_configured (no budget at all that month)
    Column("budget_state", String(16)),
    PrimaryKeyConstraint("as_of_date", "entity_id", name="pk_budget_status"),
)

credit_pool_status = Table(
    "credit_pool_status",
    metadata,
    *month_day_columns(),
    Column("included", MONEY, nullable=False),
    Column("used", MONEY, nullable=False),
    Column("remaining", MONEY, nullable=False),
    Column("percent_used", QUANTITY),
    Column("days_of_data", Integer, nullable=False),
    Column("daily_run_rate", MONEY),  # null until forecast_min_days of data
    Column("forecast_month_end_used", MONEY),
    Column("forecast_remaining", MONEY),  # < 0: the pool runs out this month
    Column("projected_depletion_date", Date),  # null: not within the month at this rate
    Column("depleted", Boolean, nullable=False),
    load_id_column(),
    PrimaryKeyConstraint("as_of_date", name="pk_credit_pool_status"),
)

provider_cap_status = Table(
    "provider_cap_status",
    metadata,
    *month_day_columns(),
    Column("provider", String(32), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("cap_quantity", QUANTITY, nullable=False),
    Column("used_quantity", QUANTITY, nullable=False),  # month to date through as_of_date
    Column("percent_used", QUANTITY, nullable=False),
    Column("remaining_quantity", QUANTITY, nullable=False),  # may be negative: overage
    Column("over_cap", Boolean, nullable=False),
    Column("days_of_data", Integer, nullable=False),  # days with complete coverage
    Column("forecast_month_end", QUANTITY),
    Column("forecast_overage", QUANTITY),  # forecast - cap when positive
    Column("projected_exhaustion_date", Date),
    Column("reason", Text),
    load_id_column(),
    PrimaryKeyConstraint("as_of_date", "provider", "metric", "unit", name="pk_provider_cap_status"),
)

usage_anomaly = Table(
    "usage_anomaly",
    metadata,
    Column("usage_date", Date, nullable=False),
    Column("entity_id", String(128), nullable=False),
    Column("entity_type", String(64)),
    Column("resource_type", String(64), nullable=False),  # the dimension that moved
    Column("credits", MONEY, nullable=False),
    Column("baseline_credits", MONEY, nullable=False),  # mean per day of the trailing window
    Column("baseline_days", Integer, nullable=False),
    Column("impact_credits", MONEY, nullable=False),  # credits - baseline
    Column("impact_pct", QUANTITY),  # null when the baseline is zero (new usage)
    Column("direction", String(8), nullable=False),  # spike | drop
    Column("is_anomaly", Boolean, nullable=False),
    load_id_column(),
    PrimaryKeyConstraint("usage_date", "entity_id", "resource_type", name="pk_usage_anomaly"),
)

# The monthly statement (issue 13): replaced per month in one transaction. One row per entity
# with provider "all" (its budget figures as of as_of_date, totals across providers), then one
# per provider and resource type (usage and credits; budget columns null). docs/statement.md.
monthly_statement = Table(
    "monthly_statement",
    metadata,
    *statement_key_columns(),
    Column("entity_name", String(256)),
    Column("entity_type", String(64)),
    Column("ledger_unit", String(64)),
    Column("usage_quantity", QUANTITY),  # provider usage in the ledger unit (expected)
    Column("expected_credits", MONEY),
    Column("credits_charged", MONEY),  # recorded by the ledger
    Column("delta_credits", MONEY),  # charged - expected; < 0 is a leak
    Column("break_rows", Integer, nullable=False),  # reconciliation rows not matched
    Column("break_delta_credits", MONEY),
    Column("breaks", Text, nullable=False),  # per status: "ledger_under 3 (-12.50); ..."
    Column("credits_used", MONEY),  # budget_status of as_of_date, on the entity line only
    Column("monthly_budget", MONEY),
    Column("budget_percent", QUANTITY),
    Column("budget_remaining", MONEY),
    Column("over_budget", Boolean),
    Column("forecast_month_end", MONEY),
    Column("forecast_percent", QUANTITY),
    Column("forecast_overrun", MONEY),
    Column("days_of_data", Integer),
    Column("as_of_date", Date),  # the month's last materialized budget day
    Column("closed", Boolean, nullable=False),  # false: provisional (late-data window open)
    load_id_column(),
    PrimaryKeyConstraint(*STATEMENT_KEY, name="pk_monthly_statement"),
)

monthly_statement_break = Table(
    "monthly_statement_break",
    metadata,
    *statement_key_columns(),
    Column("status", String(32), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("delta_credits", MONEY),
    load_id_column(),
    PrimaryKeyConstraint(*STATEMENT_KEY, "status", name="pk_monthly_statement_break"),
)
