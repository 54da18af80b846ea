"""The request budget shared across hosts: ``request_budget`` (one row per provider account,
the row a taker locks) and ``request_budget_slot`` (its sliding window's send log, at most
``max_requests`` rows per budget). Both hold only transient state: downgrading drops them.
"""

from __future__ import annotations

from usage_orchestration.warehouse.migrations.ops import (
    double,
    integer,
    string,
    table,
    table_revision,
)

revision = "0004_request_budget"
down_revision = "0003_monthly_statement"

BUDGET_KEY = string("budget_key", length=255, nullable=False)

upgrade, downgrade = table_revision(
    table("request_budget", BUDGET_KEY, primary_key=("budget_key",), key_named=False),
    table(
        "request_budget_slot",
        BUDGET_KEY,
        integer("slot", nullable=False),
        double("sent_at", nullable=False),
        primary_key=("budget_key", "slot"),
        key_named=False,
    ),
)
