"""The credit ledger's tables, as the demo creates them (the platform owns the real ones).

This project only *reads* the ledger; the demo (``sandbox/demo_ledger.py``) and the benchmark
create and fill these tables. Times are UTC (``occurred_at`` is ``timestamptz`` on PostgreSQL;
SQLite stores the UTC wall time). Money and quantities are NUMERIC.

The index ``ix_usage_event_day`` leads with ``occurred_at`` and covers every column the daily
aggregate reads, so a one-day ``GROUP BY`` is a range scan of the index alone (an index-only
scan on PostgreSQL once the table is vacuumed; a covering index on SQLite) instead of a scan of
the whole append-only table.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

ledger_metadata = MetaData()

LEDGER_QUANTITY = Numeric(38, 12, asdecimal=True)
LEDGER_CREDITS = Numeric(38, 12, asdecimal=True)
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY

resource_type = Table(
    "resource_type",
    ledger_metadata,
    Column("slug", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("category", String(32), nullable=False),  # ai | compute | storage
    Column("mode", String(16), nullable=False),  # event | gauge
    Column("unit", String(32), nullable=False),  # unit of the raw quantity
)

entity = Table(
    "entity",
    ledger_metadata,
    Column("id", String(128), primary_key=True),
    Column("entity_type", String(64), nullable=False),  # app | workspace | ...
    Column("name", String(256), nullable=False),
    Column("slug", String(256), nullable=False),
    Column("owner_id", String(128)),
)

usage_event = Table(
    "usage_event",
    ledger_metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("actor_type", String(32), nullable=False),  # user | agent | service
    Column("entity_id", String(128), nullable=False),
    Column("entity_type", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("quantity", LEDGER_QUANTITY),
    Column("unit", String(32)),
    Column("credits", LEDGER_CREDITS, nullable=False),
    Column("metadata", Text),  # JSON text, resource specific
)

# What makes a one-day GROUP BY fast: a range on occurred_at, every aggregated column covered.
usage_event_day_index = Index(
    "ix_usage_event_day",
    usage_event.c.occurred_at,
    usage_event.c.entity_id,
    usage_event.c.entity_type,
    usage_event.c.resource_type,
    usage_event.c.unit,
    usage_event.c.quantity,
    usage_event.c.credits,
)

entity_budget = Table(
    "entity_budget",
    ledger_metadata,
    Column("entity_id", String(128), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM: in force from this month on
    Column("monthly_budget", LEDGER_CREDITS, nullable=False),
)

credit_pool = Table(
    "credit_pool",
    ledger_metadata,
    Column("month", String(7), primary_key=True),  # YYYY-MM: in force from this month on
    Column("included", LEDGER_CREDITS, nullable=False),
)

license_sync = Table(
    "license_sync",
    ledger_metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("synced_at", DateTime(timezone=True)),
    Column("last_sync_failed_at", DateTime(timezone=True)),
    Column("last_sync_failure_code", String(64)),  # lm_unreachable | lm_unavailable | lm_error |
    # license_not_recognized
    Column("staleness_level", String(32)),
)

# The canonical registry (specs/usage-reporting-ledger.md, GET /api/usage/resource-types).
RESOURCE_TYPES: list[dict[str, str]] = [
    {"slug": "ai", "name": "AI", "category": "ai", "mode": "event", "unit": "dollar"},
    {"slug": "agent_run", "name": "Agent Run", "category": "ai", "mode": "event", "unit": "run"},
    {
        "slug": "app_compute",
        "name": "App Compute",
        "category": "compute",
        "mode": "event",
        "unit": "second",
    },
    {
        "slug": "job_compute",
        "name": "Job Compute",
        "category": "compute",
        "mode": "event",
        "unit": "second",
    },
    {
        "slug": "app_storage",
        "name": "App Storage",
        "category": "storage",
        "mode": "gauge",
        "unit": "byte",
    },
    {
        "slug": "workspace_storage",
        "name": "Workspace Storage",
        "category": "storage",
        "mode": "gauge",
        "unit": "byte",
    },
    {
        "slug": "file_storage",
        "name": "File Storage",
        "category": "storage",
        "mode": "gauge",
        "unit": "byte",
    },
    {
        "slug": "es_index_count",
        "name": "ES Index Count",
        "category": "storage",
        "mode": "gauge",
        "unit": "index",
    },
]
