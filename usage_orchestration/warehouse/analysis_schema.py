"""Tables computed from provider usage and the ledger: reconciliation, budgets, pool, anomalies.

Each is replaced per day (``as_of_date`` / ``usage_date``) in one transaction.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, Integer, PrimaryKeyConstraint, String, Table, Text

from usage_orchestration.warehouse.schema import MONEY, QUANTITY, metadata

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
    Column("load_id", String(64), nullable=False),
    PrimaryKeyConstraint("usage_date", "provider", "entity_id", "resource_type", name="pk_usage_reconciliation"),
)

budget_status = Table(
    "budget_status",
    metadata,
    Column("as_of_date", Date, nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM
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
    Column("load_id", String(64), nullable=False),
    PrimaryKeyConstraint("as_of_date", "entity_id", name="pk_budget_status"),
)
