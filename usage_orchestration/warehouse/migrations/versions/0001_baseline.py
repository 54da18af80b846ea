"""Baseline: the warehouse schema as ``metadata.create_all`` made it before migrations.

Every table the project owns: provider usage, staging and coverage, the ledger's daily
aggregate, reconciliation, budgets, credit pool, provider caps, anomalies, the FOCUS rows, and
the alert outbox, delivery log and silences. Money and quantities are NUMERIC(38, 12) here (on
SQLite a binary float: revision 0002 makes them exact). A warehouse created before migrations
existed is adopted: every CREATE is IF NOT EXISTS, so the tables it has are kept as they are
(as ``create_all(checkfirst=True)`` did) and the missing ones created.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _usage_columns() -> list[sa.Column]:
    """The columns provider_usage and its staging table share (staging adds stage_id first)."""
    return [
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("source_key", sa.String(length=512), nullable=False),
        sa.Column("billing_account_id", sa.String(length=128), nullable=False),
        sa.Column("resource_id", sa.String(length=256), nullable=False),
        sa.Column("resource_name", sa.String(length=256), nullable=True),
        sa.Column("sub_account_id", sa.String(length=512), nullable=True),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("charge_period_start", sa.DateTime(), nullable=False),
        sa.Column("charge_period_end", sa.DateTime(), nullable=False),
        sa.Column("consumed_quantity", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("consumed_unit", sa.String(length=64), nullable=False),
        sa.Column("raw_quantity", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("raw_unit", sa.String(length=64), nullable=False),
        sa.Column("billed_cost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("billing_currency", sa.String(length=8), nullable=True),
        sa.Column("list_cost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("entity_id", sa.String(length=128), nullable=True),
        sa.Column("entity_type", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("attempted_at", sa.DateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alert_delivery_dedup_key"),
            ["dedup_key"],
            unique=False,
            if_not_exists=True,
        )

    op.create_table(
        "alert_outbox",
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("threshold", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("links", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger_status", sa.String(length=16), nullable=False),
        sa.Column("resolve_status", sa.String(length=16), nullable=True),
        sa.Column("suppressed_reason", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dedup_key", name="pk_alert_outbox"),
        if_not_exists=True,
    )
    op.create_table(
        "alert_silence",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=512), nullable=True),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "budget_status",
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=True),
        sa.Column("entity_name", sa.String(length=256), nullable=True),
        sa.Column("credits_used", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("monthly_budget", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("budget_percent", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("budget_remaining", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("over_budget", sa.Boolean(), nullable=False),
        sa.Column("highest_threshold_crossed", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("days_of_data", sa.Integer(), nullable=False),
        sa.Column("forecast_month_end", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("forecast_overrun", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("thresholds_crossed", sa.Text(), nullable=True),
        sa.Column("forecast_percent", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("days_elapsed", sa.Integer(), nullable=True),
        sa.Column("days_in_month", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("as_of_date", "entity_id", name="pk_budget_status"),
        if_not_exists=True,
    )
    op.create_table(
        "credit_pool_status",
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("included", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("used", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("remaining", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("percent_used", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("days_of_data", sa.Integer(), nullable=False),
        sa.Column("daily_run_rate", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("forecast_month_end_used", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("forecast_remaining", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("projected_depletion_date", sa.Date(), nullable=True),
        sa.Column("depleted", sa.Boolean(), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("as_of_date", name="pk_credit_pool_status"),
        if_not_exists=True,
    )
    op.create_table(
        "focus_cost_row",
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("AvailabilityZone", sa.String(length=256), nullable=True),
        sa.Column("BilledCost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("BillingAccountId", sa.String(length=256), nullable=True),
        sa.Column("BillingAccountName", sa.String(length=256), nullable=True),
        sa.Column("BillingCurrency", sa.String(length=256), nullable=True),
        sa.Column("BillingPeriodEnd", sa.DateTime(), nullable=True),
        sa.Column("BillingPeriodStart", sa.DateTime(), nullable=True),
        sa.Column("ChargeCategory", sa.String(length=256), nullable=True),
        sa.Column("ChargeClass", sa.String(length=256), nullable=True),
        sa.Column("ChargeDescription", sa.Text(), nullable=True),
        sa.Column("ChargeFrequency", sa.String(length=256), nullable=True),
        sa.Column("ChargePeriodEnd", sa.DateTime(), nullable=True),
        sa.Column("ChargePeriodStart", sa.DateTime(), nullable=True),
        sa.Column("CommitmentDiscountCategory", sa.String(length=256), nullable=True),
        sa.Column("CommitmentDiscountId", sa.String(length=256), nullable=True),
        sa.Column("CommitmentDiscountName", sa.String(length=256), nullable=True),
        sa.Column("CommitmentDiscountStatus", sa.String(length=256), nullable=True),
        sa.Column("CommitmentDiscountType", sa.String(length=256), nullable=True),
        sa.Column("ConsumedQuantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("ConsumedUnit", sa.String(length=256), nullable=True),
        sa.Column("ContractedCost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("ContractedUnitPrice", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("EffectiveCost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("InvoiceIssuerName", sa.String(length=256), nullable=True),
        sa.Column("ListCost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("ListUnitPrice", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("PricingCategory", sa.String(length=256), nullable=True),
        sa.Column("PricingQuantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("PricingUnit", sa.String(length=256), nullable=True),
        sa.Column("ProviderName", sa.String(length=256), nullable=True),
        sa.Column("PublisherName", sa.String(length=256), nullable=True),
        sa.Column("RegionId", sa.String(length=256), nullable=True),
        sa.Column("RegionName", sa.String(length=256), nullable=True),
        sa.Column("ResourceId", sa.Text(), nullable=True),
        sa.Column("ResourceName", sa.Text(), nullable=True),
        sa.Column("ResourceType", sa.String(length=256), nullable=True),
        sa.Column("ServiceCategory", sa.String(length=256), nullable=True),
        sa.Column("ServiceName", sa.String(length=256), nullable=True),
        sa.Column("SkuId", sa.String(length=256), nullable=True),
        sa.Column("SkuPriceId", sa.String(length=256), nullable=True),
        sa.Column("SubAccountId", sa.Text(), nullable=True),
        sa.Column("SubAccountName", sa.String(length=256), nullable=True),
        sa.Column("Tags", sa.Text(), nullable=True),
        sa.Column("x_Provider", sa.String(length=256), nullable=True),
        sa.Column("x_Metric", sa.String(length=256), nullable=True),
        sa.Column("x_EntityId", sa.String(length=256), nullable=True),
        sa.Column("x_EntityType", sa.String(length=256), nullable=True),
        sa.Column("x_LedgerResourceType", sa.String(length=256), nullable=True),
        sa.Column("x_LedgerQuantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("x_LedgerUnit", sa.String(length=256), nullable=True),
        sa.Column("x_CreditsListUnitPrice", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("x_CreditsListCost", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("x_CostStatus", sa.String(length=256), nullable=True),
        sa.Column("x_SourceRows", sa.Integer(), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        if_not_exists=True,
    )
    with op.batch_alter_table("focus_cost_row", schema=None) as batch_op:
        batch_op.create_index(
            "ix_focus_cost_row_day", ["usage_date", "x_Provider"], unique=False, if_not_exists=True
        )

    op.create_table(
        "ledger_daily_usage",
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("credits", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "usage_date", "entity_id", "resource_type", "unit", name="pk_ledger_daily_usage"
        ),
        if_not_exists=True,
    )
    op.create_table(
        "provider_cap_status",
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("cap_quantity", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("used_quantity", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("percent_used", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("remaining_quantity", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("over_cap", sa.Boolean(), nullable=False),
        sa.Column("days_of_data", sa.Integer(), nullable=False),
        sa.Column("forecast_month_end", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("forecast_overage", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("projected_exhaustion_date", sa.Date(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "as_of_date", "provider", "metric", "unit", name="pk_provider_cap_status"
        ),
        if_not_exists=True,
    )
    op.create_table(
        "provider_coverage",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=256), nullable=False),
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "provider", "account_id", "usage_date", name="pk_provider_coverage"
        ),
        if_not_exists=True,
    )
    op.create_table(
        "provider_usage",
        *_usage_columns(),
        sa.PrimaryKeyConstraint("provider", "usage_date", "source_key", name="pk_provider_usage"),
        if_not_exists=True,
    )
    op.create_table(
        "provider_usage_staging",
        sa.Column("stage_id", sa.String(length=64), nullable=False),
        *_usage_columns(),
        if_not_exists=True,
    )
    with op.batch_alter_table("provider_usage_staging", schema=None) as batch_op:
        batch_op.create_index(
            "ix_provider_usage_staging_stage",
            ["stage_id", "provider"],
            unique=False,
            if_not_exists=True,
        )

    op.create_table(
        "usage_anomaly",
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("baseline_credits", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("baseline_days", sa.Integer(), nullable=False),
        sa.Column("impact_credits", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("impact_pct", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("is_anomaly", sa.Boolean(), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "usage_date", "entity_id", "resource_type", name="pk_usage_anomaly"
        ),
        if_not_exists=True,
    )
    op.create_table(
        "usage_reconciliation",
        sa.Column("usage_date", sa.Date(), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("ledger_unit", sa.String(length=64), nullable=True),
        sa.Column("expected_quantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("expected_credits", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("recorded_quantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("recorded_credits", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("delta_quantity", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("delta_credits", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("delta_pct", sa.Numeric(precision=38, scale=12), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("within_tolerance", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("provider_rows", sa.Integer(), nullable=True),
        sa.Column("ledger_events", sa.Integer(), nullable=True),
        sa.Column("compared_on", sa.String(length=16), nullable=True),
        sa.Column("blocking", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint(
            "usage_date", "provider", "entity_id", "resource_type", name="pk_usage_reconciliation"
        ),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("usage_reconciliation")
    op.drop_table("usage_anomaly")
    with op.batch_alter_table("provider_usage_staging", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_usage_staging_stage")

    op.drop_table("provider_usage_staging")
    op.drop_table("provider_usage")
    op.drop_table("provider_coverage")
    op.drop_table("provider_cap_status")
    op.drop_table("ledger_daily_usage")
    with op.batch_alter_table("focus_cost_row", schema=None) as batch_op:
        batch_op.drop_index("ix_focus_cost_row_day")

    op.drop_table("focus_cost_row")
    op.drop_table("credit_pool_status")
    op.drop_table("budget_status")
    op.drop_table("alert_silence")
    op.drop_table("alert_outbox")
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_delivery_dedup_key"))

    op.drop_table("alert_delivery")
