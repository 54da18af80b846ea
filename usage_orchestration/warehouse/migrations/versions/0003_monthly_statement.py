"""The monthly statement: ``monthly_statement`` and ``monthly_statement_break`` (issue 13).

Two new tables, nothing else changes; downgrade drops them (they are re-materialized from
budget_status and usage_reconciliation).
"""

from __future__ import annotations

from usage_orchestration.warehouse.migrations.ops import (
    LOAD_ID,
    boolean,
    date,
    exact,
    integer,
    string,
    table,
    table_revision,
    text,
)

revision = "0003_monthly_statement"
down_revision = "0002_exact_decimals"

# a statement line: one entity's use of one provider's resource type in a month
KEY = ("month", "entity_id", "provider", "resource_type")
KEY_COLUMNS = (
    *string("month", length=7, nullable=False),
    *string("entity_id", length=128, nullable=False),
    *string("provider", length=32, nullable=False),
    *string("resource_type", length=64, nullable=False),
)

upgrade, downgrade = table_revision(
    table(
        "monthly_statement",
        KEY_COLUMNS,
        string("entity_name", length=256),
        string("entity_type", "ledger_unit", length=64),
        exact("usage_quantity", "expected_credits", "credits_charged", "delta_credits"),
        integer("break_rows", nullable=False),
        exact("break_delta_credits"),
        text("breaks", nullable=False),
        exact("credits_used", "monthly_budget", "budget_percent", "budget_remaining"),
        boolean("over_budget"),
        exact("forecast_month_end", "forecast_percent", "forecast_overrun"),
        integer("days_of_data"),
        date("as_of_date"),
        boolean("closed", nullable=False),
        LOAD_ID,
        primary_key=KEY,
    ),
    table(
        "monthly_statement_break",
        KEY_COLUMNS,
        string("status", length=32, nullable=False),
        integer("row_count", nullable=False),
        exact("delta_credits"),
        LOAD_ID,
        primary_key=(*KEY, "status"),
    ),
)
