"""Alembic environment of the warehouse, configured in code by ``warehouse/migrate.py``.

The caller passes an open connection in ``config.attributes["connection"]`` (under its migration
lock); there is no alembic.ini and no offline mode. Batch mode so that SQLite, which cannot
ALTER a column, gets its tables recreated with the data copied.
"""

from __future__ import annotations

from alembic import context

from usage_orchestration.warehouse.migrate import (
    VERSION_TABLE,
    all_tables_metadata,
    render_item,
)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the warehouse migrations run through usage_orchestration.warehouse.migrate "
        "(usage-orchestration db upgrade), which passes the connection"
    )
context.configure(
    connection=connection,
    target_metadata=all_tables_metadata(),
    version_table=VERSION_TABLE,
    render_as_batch=True,
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
