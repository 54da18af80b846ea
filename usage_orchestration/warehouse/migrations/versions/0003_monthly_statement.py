"""The monthly statement: ``monthly_statement`` and ``monthly_statement_break`` (issue 13).

Two new tables, nothing else changes; downgrade drops them (they are re-materialized from
budget_status and usage_reconciliation).

Revision ID: 0003_monthly_statement
Revises: 0002_exact_decimals
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from usage_orchestration.warehouse.types import ExactDecimal

revision = "0003_monthly_statement"
down_revision = "0002_exact_decimals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monthly_statement",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("entity_name", sa.String(length=256), nullable=True),
        sa.Column("entity_type", sa.String(length=64), nullable=True),
        sa.Column("ledger_unit", sa.String(length=64), nullable=True),
        sa.Column("usage_quantity", ExactDecimal(), nullable=True),
        sa.Column("expected_credits", ExactDecimal(), nullable=True),
        sa.Column("credits_charged", ExactDecimal(), nullable=True),
        sa.Column("delta_credits", ExactDecimal(), nullable=True),
        sa.Column("break_rows", sa.Integer(), nullable=False),
        sa.Column("break_delta_credits", ExactDecimal(), nullable=True),
        sa.Column("breaks", sa.Text(), nullable=False),
        sa.Column("credits_used", ExactDecimal(), nullable=True),
        sa.Column("monthly_budget", ExactDecimal(), nullable=True),
        sa.Column("budget_percent", ExactDecimal(), nullable=True),
        sa.Column("budget_remaining", ExactDecimal(), nullable=True),
        sa.Column("over_budget", sa.Boolean(), nullable=True),
        sa.Column("forecast_month_end", ExactDecimal(), nullable=True),
        sa.Column("forecast_percent", ExactDecimal(), nullable=True),
        sa.Column("forecast_overrun", ExactDecimal(), nullable=True),
        sa.Column("days_of_data", sa.Integer(), nullable=True),
        sa.Column("as_of_date", sa.Date(), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "month", "entity_id", "provider", "resource_type", name="pk_monthly_statement"
        ),
    )
    op.create_table(
        "monthly_statement_break",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("delta_credits", ExactDecimal(), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "month",
            "entity_id",
            "provider",
            "resource_type",
            "status",
            name="pk_monthly_statement_break",
        ),  # fmt: skip
    )


def downgrade() -> None:
    op.drop_table("monthly_statement_break")
    op.drop_table("monthly_statement")
