"""budget_status.budget_state: whether a budget was configured for the entity's month.

``configured`` (a budget in force for the entity), ``no_budget`` (the month has budgets, not
for this entity) or ``not_configured`` (the ledger holds no budget at all for the month, e.g.
a month before budgets were set). Nullable: rows written before this revision keep NULL
(unknown) until their day is re-materialized.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_budget_state"
down_revision = "0004_request_budget"


def upgrade() -> None:
    with op.batch_alter_table("budget_status") as batch:
        batch.add_column(sa.Column("budget_state", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("budget_status") as batch:
        batch.drop_column("budget_state")
