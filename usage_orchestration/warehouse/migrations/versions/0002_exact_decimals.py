"""Exact money and quantities on SQLite: decimal TEXT instead of NUMERIC affinity (a float).

PostgreSQL already stores NUMERIC(38, 12) exactly: nothing changes there. On SQLite every money
and quantity column is recreated (batch mode) with TEXT affinity and its values rewritten as
canonical decimal text (``ExactDecimal``). The floats already stored cannot regain digits they
lost; each becomes the decimal of its shortest round-trip spelling (``repr``), which is the
value that was written whenever it had at most 15 significant digits.

The values are marked (``~`` prefix) before the copy so the NUMERIC column keeps them as text,
not floats, while the table is recreated; the mark is removed after.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

from usage_orchestration.warehouse.migrations.ops import numeric

revision = "0002_exact_decimals"
down_revision = "0001_baseline"

# Frozen as at the baseline: later revisions must not change what this one converted.
DECIMAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "budget_status": (
        "credits_used", "monthly_budget", "budget_percent", "budget_remaining",
        "highest_threshold_crossed", "forecast_month_end", "forecast_overrun", "forecast_percent",
    ),
    "credit_pool_status": (
        "included", "used", "remaining", "percent_used", "daily_run_rate",
        "forecast_month_end_used", "forecast_remaining",
    ),
    "focus_cost_row": (
        "BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice",
        "EffectiveCost", "ListCost", "ListUnitPrice", "PricingQuantity", "x_LedgerQuantity",
        "x_CreditsListUnitPrice", "x_CreditsListCost",
    ),
    "ledger_daily_usage": ("quantity", "credits"),
    "provider_cap_status": (
        "cap_quantity", "used_quantity", "percent_used", "remaining_quantity",
        "forecast_month_end", "forecast_overage",
    ),
    "provider_usage": ("consumed_quantity", "raw_quantity", "billed_cost", "list_cost"),
    "provider_usage_staging": ("consumed_quantity", "raw_quantity", "billed_cost", "list_cost"),
    "usage_anomaly": ("credits", "baseline_credits", "impact_credits", "impact_pct"),
    "usage_reconciliation": (
        "expected_quantity", "expected_credits", "recorded_quantity", "recorded_credits",
        "delta_quantity", "delta_credits", "delta_pct",
    ),
}  # fmt: skip

NUMERIC = numeric.make_type()  # what the baseline stored money and quantities as
_MARK = "~"
_MARK_FN = "usage_orchestration_mark_decimal"
_CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP)  # 38 digits do not fit the default 28


def _marked(value: Any) -> str | None:
    """A stored number as marked canonical decimal text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str) and value.startswith(_MARK):
        return value  # marked by an earlier attempt that stopped half-way (SQLite DDL commits)
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    q = d.quantize(Decimal(1).scaleb(-12), context=_CONTEXT)
    return _MARK + format(abs(q) if q.is_zero() else q, "f")


def _rewrite(table: str, columns: tuple[str, ...], expression: Any) -> None:
    t = sa.table(table, *(sa.column(c) for c in columns))
    op.execute(t.update().values({c: expression(t.c[c]) for c in columns}))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    dbapi = bind.connection.dbapi_connection
    assert dbapi is not None
    dbapi.create_function(_MARK_FN, 1, _marked, deterministic=True)
    inspector = sa.inspect(bind)
    for table, listed in DECIMAL_COLUMNS.items():
        # only what the table has: an adopted pre-migration table may lack later columns
        present = {c["name"] for c in inspector.get_columns(table)}
        columns = tuple(c for c in listed if c in present)
        if not columns:
            continue
        _rewrite(table, columns, lambda c: getattr(sa.func, _MARK_FN)(c))
        with op.batch_alter_table(table, recreate="always") as batch:
            for name in columns:
                batch.alter_column(name, type_=sa.Text(), existing_type=NUMERIC)
        _rewrite(table, columns, lambda c: sa.func.substr(c, len(_MARK) + 1))


def downgrade() -> None:
    # Back to NUMERIC affinity: SQLite turns the text into floats again (digits beyond ~15 lost).
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in DECIMAL_COLUMNS.items():
        with op.batch_alter_table(table, recreate="always") as batch:
            for name in columns:
                batch.alter_column(name, type_=NUMERIC, existing_type=sa.Text())
