"""Tables of the warehouse: provider usage and coverage, and the ledger's daily aggregate.

Money and quantities are ``ExactDecimal`` (``warehouse/types.py``): NUMERIC(38, 12) on
PostgreSQL, canonical decimal text on SQLite, a Decimal on both; sum them with ``exact_sum``.
The schema itself is owned by the Alembic revisions in ``warehouse/migrations/``: a change here
needs a revision (docs/operations.md). Other modules add their tables to the same
``metadata`` (reconciliation and budgets in ``warehouse/analysis_schema.py``, alert outbox in
``alerts/outbox.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from usage_orchestration.warehouse.types import ExactDecimal

metadata = MetaData()

QUANTITY = ExactDecimal()
MONEY = ExactDecimal()


def load_id_column() -> Column[str]:
    """The load that wrote the row, on every warehouse table (a new Column each: a Column
    belongs to one table)."""
    return Column("load_id", String(64), nullable=False)


def provider_load_columns() -> tuple[Column[Any], ...]:
    """The load that wrote a provider row and when it fetched the row's data."""
    return load_id_column(), Column("fetched_at", DateTime, nullable=False)


provider_usage = Table(
    "provider_usage",
    metadata,
    Column("provider", String(32), nullable=False),
    Column("usage_date", Date, nullable=False),
    Column("source_key", String(512), nullable=False),
    Column("billing_account_id", String(128), nullable=False),
    Column("resource_id", String(256), nullable=False),
    Column("resource_name", String(256)),
    Column("sub_account_id", String(512)),
    Column("metric", String(128), nullable=False),
    Column("charge_period_start", DateTime, nullable=False),
    Column("charge_period_end", DateTime, nullable=False),
    Column("consumed_quantity", QUANTITY, nullable=False),
    Column("consumed_unit", String(64), nullable=False),
    Column("raw_quantity", QUANTITY, nullable=False),
    Column("raw_unit", String(64), nullable=False),
    Column("billed_cost", MONEY),
    Column("billing_currency", String(8)),
    Column("list_cost", MONEY),
    Column("details", Text),
    Column("entity_id", String(128)),
    Column("entity_type", String(64)),
    Column("resource_type", String(64)),
    *provider_load_columns(),
    PrimaryKeyConstraint("provider", "usage_date", "source_key", name="pk_provider_usage"),
)

# A provider load's rows before they are audited and published (write, audit, publish): rows
# of one load share ``stage_id``; no key, so duplicates can be found and judged in SQL.
provider_usage_staging = Table(
    "provider_usage_staging",
    metadata,
    Column("stage_id", String(64), nullable=False),
    *(Column(c.name, c.type, nullable=c.nullable) for c in provider_usage.columns),
    Index("ix_provider_usage_staging_stage", "stage_id", "provider"),
)

provider_coverage = Table(
    "provider_coverage",
    metadata,
    Column("provider", String(32), nullable=False),
    Column("account_id", String(256), nullable=False),
    Column("usage_date", Date, nullable=False),
    Column("status", String(16), nullable=False),  # complete | unavailable
    Column("reason", Text),
    Column("row_count", Integer, nullable=False),
    *provider_load_columns(),
    PrimaryKeyConstraint("provider", "account_id", "usage_date", name="pk_provider_coverage"),
)

ledger_daily_usage = Table(
    "ledger_daily_usage",
    metadata,
    Column("usage_date", Date, nullable=False),
    Column("entity_id", String(128), nullable=False),
    Column("entity_type", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("quantity", QUANTITY),  # null: the ledger backend cannot tell (HTTP API)
    Column("credits", MONEY, nullable=False),
    Column("events", Integer, nullable=False),
    load_id_column(),
    PrimaryKeyConstraint(
        "usage_date", "entity_id", "resource_type", "unit", name="pk_ledger_daily_usage"
    ),
)
