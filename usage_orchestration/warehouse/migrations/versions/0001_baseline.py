"""Baseline: the warehouse schema as ``metadata.create_all`` made it before migrations.

Every table the project owns: provider usage, staging and coverage, the ledger's daily
aggregate, reconciliation, budgets, credit pool, provider caps, anomalies, the FOCUS rows, and
the alert outbox, delivery log and silences. Money and quantities are NUMERIC(38, 12) here (on
SQLite a binary float: revision 0002 makes them exact). A warehouse created before migrations
existed is adopted: every CREATE is IF NOT EXISTS, so the tables it has are kept as they are
(as ``create_all(checkfirst=True)`` did) and the missing ones created.
"""

from __future__ import annotations

from usage_orchestration.warehouse.migrations.ops import (
    LOAD_ID,
    Column,
    boolean,
    date,
    integer,
    numeric,
    string,
    table,
    table_revision,
    text,
    timestamp,
)

revision = "0001_baseline"
down_revision = None


def _ledger_key(*, entity_type_nullable: bool = True) -> tuple[Column, ...]:
    """The day, entity and resource type the ledger's usage is kept by (its daily aggregate,
    the anomalies and the reconciliation)."""
    return (
        *date("usage_date", nullable=False),
        *string("entity_id", length=128, nullable=False),
        *string("entity_type", length=64, nullable=entity_type_nullable),
        *string("resource_type", length=64, nullable=False),
    )


# provider_usage and its staging table share these (staging adds stage_id first)
_USAGE_COLUMNS = (
    *string("provider", length=32, nullable=False),
    *date("usage_date", nullable=False),
    *string("source_key", length=512, nullable=False),
    *string("billing_account_id", length=128, nullable=False),
    *string("resource_id", length=256, nullable=False),
    *string("resource_name", length=256),
    *string("sub_account_id", length=512),
    *string("metric", length=128, nullable=False),
    *timestamp("charge_period_start", "charge_period_end", nullable=False),
    *numeric("consumed_quantity", nullable=False),
    *string("consumed_unit", length=64, nullable=False),
    *numeric("raw_quantity", nullable=False),
    *string("raw_unit", length=64, nullable=False),
    *numeric("billed_cost"),
    *string("billing_currency", length=8),
    *numeric("list_cost"),
    *text("details"),
    *string("entity_id", length=128),
    *string("entity_type", "resource_type", length=64),
    *LOAD_ID,
    *timestamp("fetched_at", nullable=False),
)

TABLES = (
    table(
        "alert_delivery",
        integer("id", nullable=False),
        string("dedup_key", length=255, nullable=False),
        string("action", "channel", length=16, nullable=False),
        timestamp("attempted_at", nullable=False),
        string("outcome", length=16, nullable=False),
        integer("http_status"),
        text("reason"),
        primary_key=("id",),
        key_named=False,
        indexes={"ix_alert_delivery_dedup_key": ("dedup_key",)},
    ),
    table(
        "alert_outbox",
        string("dedup_key", length=255, nullable=False),
        string("kind", length=64, nullable=False),
        string("severity", length=16, nullable=False),
        string("subject", length=512, nullable=False),
        string("period", length=32, nullable=False),
        string("threshold", length=64, nullable=False),
        text("summary", "details", "links", nullable=False),
        string("channel", "state", "trigger_status", length=16, nullable=False),
        string("resolve_status", length=16),
        string("suppressed_reason", length=32),
        integer("attempts", nullable=False),
        timestamp("next_attempt_at", "lease_until"),
        text("last_error"),
        timestamp("first_seen_at", "last_seen_at", nullable=False),
        timestamp("resolved_at"),
        timestamp("updated_at", nullable=False),
        primary_key=("dedup_key",),
    ),
    table(
        "alert_silence",
        integer("id", nullable=False),
        string("kind", length=64),
        string("subject", length=512),
        timestamp("starts_at", "ends_at", nullable=False),
        text("reason", nullable=False),
        timestamp("created_at", nullable=False),
        primary_key=("id",),
        key_named=False,
    ),
    table(
        "budget_status",
        date("as_of_date", nullable=False),
        string("month", length=7, nullable=False),
        string("entity_id", length=128, nullable=False),
        string("entity_type", length=64),
        string("entity_name", length=256),
        numeric("credits_used", nullable=False),
        numeric("monthly_budget", "budget_percent", "budget_remaining"),
        boolean("over_budget", nullable=False),
        numeric("highest_threshold_crossed"),
        integer("days_of_data", nullable=False),
        numeric("forecast_month_end", "forecast_overrun"),
        LOAD_ID,
        text("thresholds_crossed"),
        numeric("forecast_percent"),
        integer("days_elapsed", "days_in_month"),
        primary_key=("as_of_date", "entity_id"),
    ),
    table(
        "credit_pool_status",
        date("as_of_date", nullable=False),
        string("month", length=7, nullable=False),
        numeric("included", "used", "remaining", nullable=False),
        numeric("percent_used"),
        integer("days_of_data", nullable=False),
        numeric("daily_run_rate", "forecast_month_end_used", "forecast_remaining"),
        date("projected_depletion_date"),
        boolean("depleted", nullable=False),
        LOAD_ID,
        primary_key=("as_of_date",),
    ),
    table(
        "focus_cost_row",  # the FOCUS 1.2 columns, all nullable, then the project's x_ ones
        date("usage_date", nullable=False),
        string("AvailabilityZone", length=256),
        numeric("BilledCost"),
        string("BillingAccountId", "BillingAccountName", "BillingCurrency", length=256),
        timestamp("BillingPeriodEnd", "BillingPeriodStart"),
        string("ChargeCategory", "ChargeClass", length=256),
        text("ChargeDescription"),
        string("ChargeFrequency", length=256),
        timestamp("ChargePeriodEnd", "ChargePeriodStart"),
        string(
            "CommitmentDiscountCategory",
            "CommitmentDiscountId",
            "CommitmentDiscountName",
            "CommitmentDiscountStatus",
            "CommitmentDiscountType",
            length=256,
        ),
        numeric("ConsumedQuantity"),
        string("ConsumedUnit", length=256),
        numeric("ContractedCost", "ContractedUnitPrice", "EffectiveCost"),
        string("InvoiceIssuerName", length=256),
        numeric("ListCost", "ListUnitPrice"),
        string("PricingCategory", length=256),
        numeric("PricingQuantity"),
        string(
            "PricingUnit", "ProviderName", "PublisherName", "RegionId", "RegionName", length=256
        ),
        text("ResourceId", "ResourceName"),
        string("ResourceType", "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", length=256),
        text("SubAccountId"),
        string("SubAccountName", length=256),
        text("Tags"),
        string("x_Provider", "x_Metric", length=256),  # the provider's side
        string("x_EntityId", "x_EntityType", "x_LedgerResourceType", length=256),  # the ledger's
        numeric("x_LedgerQuantity"),
        string("x_LedgerUnit", length=256),
        numeric("x_CreditsListUnitPrice", "x_CreditsListCost"),
        string("x_CostStatus", length=256),
        integer("x_SourceRows"),
        LOAD_ID,
        indexes={"ix_focus_cost_row_day": ("usage_date", "x_Provider")},
    ),
    table(
        "ledger_daily_usage",
        _ledger_key(entity_type_nullable=False),
        string("unit", length=64, nullable=False),
        numeric("quantity"),
        numeric("credits", nullable=False),
        integer("events", nullable=False),
        LOAD_ID,
        primary_key=("usage_date", "entity_id", "resource_type", "unit"),
    ),
    table(
        "provider_cap_status",
        date("as_of_date", nullable=False),
        string("month", length=7, nullable=False),
        string("provider", length=32, nullable=False),
        string("metric", length=128, nullable=False),
        string("unit", length=64, nullable=False),
        numeric(
            "cap_quantity", "used_quantity", "percent_used", "remaining_quantity", nullable=False
        ),
        boolean("over_cap", nullable=False),
        integer("days_of_data", nullable=False),
        numeric("forecast_month_end", "forecast_overage"),
        date("projected_exhaustion_date"),
        text("reason"),
        LOAD_ID,
        primary_key=("as_of_date", "provider", "metric", "unit"),
    ),
    table(
        "provider_coverage",
        string("provider", length=32, nullable=False),
        string("account_id", length=256, nullable=False),
        date("usage_date", nullable=False),
        string("status", length=16, nullable=False),
        text("reason"),
        integer("row_count", nullable=False),
        LOAD_ID,
        timestamp("fetched_at", nullable=False),
        primary_key=("provider", "account_id", "usage_date"),
    ),
    table(
        "provider_usage",
        _USAGE_COLUMNS,
        primary_key=("provider", "usage_date", "source_key"),
    ),
    table(
        "provider_usage_staging",
        string("stage_id", length=64, nullable=False),
        _USAGE_COLUMNS,
        indexes={"ix_provider_usage_staging_stage": ("stage_id", "provider")},
    ),
    table(
        "usage_anomaly",
        _ledger_key(),
        numeric("credits", "baseline_credits", nullable=False),
        integer("baseline_days", nullable=False),
        numeric("impact_credits", nullable=False),
        numeric("impact_pct"),
        string("direction", length=8, nullable=False),
        boolean("is_anomaly", nullable=False),
        LOAD_ID,
        primary_key=("usage_date", "entity_id", "resource_type"),
    ),
    table(
        "usage_reconciliation",
        _ledger_key(),
        string("provider", length=32, nullable=False),
        string("ledger_unit", length=64),
        numeric(
            "expected_quantity",
            "expected_credits",
            "recorded_quantity",
            "recorded_credits",
            "delta_quantity",
            "delta_credits",
            "delta_pct",
        ),
        string("status", length=32, nullable=False),
        boolean("within_tolerance", nullable=False),
        text("reason"),
        LOAD_ID,
        integer("provider_rows", "ledger_events"),
        string("compared_on", length=16),
        boolean("blocking"),
        primary_key=("usage_date", "provider", "entity_id", "resource_type"),
    ),
)

upgrade, downgrade = table_revision(*TABLES, if_not_exists=True)
