"""The request budget shared across hosts: ``request_budget`` (one row per provider account,
the row a taker locks) and ``request_budget_slot`` (its sliding window's send log, at most
``max_requests`` rows per budget). Both hold only transient state: downgrading drops them.

Revision ID: 0004_request_budget
Revises: 0003_monthly_statement
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_request_budget"
down_revision = "0003_monthly_statement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_budget",
        sa.Column("budget_key", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("budget_key"),
    )
    op.create_table(
        "request_budget_slot",
        sa.Column("budget_key", sa.String(length=255), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("budget_key", "slot"),
    )


def downgrade() -> None:
    op.drop_table("request_budget_slot")
    op.drop_table("request_budget")
