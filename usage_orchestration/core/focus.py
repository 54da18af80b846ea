"""Provider usage as FOCUS 1.0 cost and usage rows. Pure: no Dagster, no SQL, no I/O.

The input is ``provider_usage`` aggregated per charge (provider, account, resource, sub-account,
metric, charge period, units); the output is one row keyed by FOCUS column names, plus ``x_``
columns for what FOCUS has no column for (the ledger entity, the platform's credits). Every
number is the provider's own or derived from the settings; a number nobody knows is ``None``
(and such a row is marked ``x_CostStatus = "unknown"`` and kept out of the FOCUS export, since
FOCUS 1.0 allows no null cost). ``docs/focus.md`` maps every column to its source.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from usage_orchestration.core.dates import as_utc, month_start, next_month, utc_midnight
from usage_orchestration.core.mapping import MappingResolver, to_ledger_quantity
from usage_orchestration.core.usage import Charge
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping

FOCUS_VERSION = "1.0"
COST_REPORTED = "reported"
COST_UNKNOWN = "unknown"
# Storage scale of NUMERIC(38, 12): a derived unit price is rounded once, here.
_QUANTUM = Decimal(1).scaleb(-12)

ChargeCategory = Literal["Usage", "Purchase", "Tax", "Credit", "Adjustment"]
USAGE: ChargeCategory = "Usage"  # every row: metered consumption, no purchases or credits
ServiceCategory = Literal[
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
    "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
    "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
    "Storage", "Web", "Other",
]  # fmt: skip


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ProviderProfile:
    """What FOCUS names about a provider that its usage rows do not carry. Every provider here
    publishes and invoices its own service, so one company name fills all three name columns."""

    provider_name: str
    service_name: str
    resource_type: str
    service_category: ServiceCategory
    # provider metric → category, where it differs from the provider's default
    metric_categories: dict[str, ServiceCategory] = field(default_factory=dict)

    @property
    def publisher_name(self) -> str:
        return self.provider_name

    @property
    def invoice_issuer_name(self) -> str:
        return self.provider_name

    def category(self, metric: str) -> ServiceCategory:
        return self.metric_categories.get(metric, self.service_category)


PROFILES: dict[str, ProviderProfile] = {
    "phala": ProviderProfile(
        "Phala Network", "Phala Cloud", "App", "Compute", {"storage": "Storage"}
    ),
    "neon": ProviderProfile("Neon", "Neon Serverless Postgres", "Project", "Databases"),
    "forge": ProviderProfile("Atlassian", "Atlassian Forge", "App", "Compute"),
}


def profile(provider: str) -> ProviderProfile:
    """The provider's profile; a provider added to the registry without one still maps, under
    its slug and the category "Other", rather than being dropped."""
    return PROFILES.get(provider) or ProviderProfile(provider, provider, "Resource", "Other")


class ChargeUsage(Charge):
    """``provider_usage`` summed per charge (the SQL of ``warehouse/focus.py``)."""

    rows: int = Field(ge=1)
    rows_with_cost: int = Field(ge=0)

    @property
    def cost_known(self) -> bool:
        """Every summed row reported a cost, in a currency: otherwise the sum is not the bill."""
        return (
            self.rows_with_cost == self.rows
            and self.billed_cost is not None
            and bool(self.billing_currency)
        )


def billing_period(start: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) of the charge: the providers here invoice monthly."""
    day = as_utc(start).date()
    return utc_midnight(month_start(day)), utc_midnight(next_month(day))


def _unit_price(cost: Decimal | None, quantity: Decimal) -> Decimal | None:
    """Cost per pricing unit, derived from the reported cost (no quantity: no price)."""
    if cost is None or quantity <= 0:
        return None
    return (cost / quantity).quantize(_QUANTUM)


def _credits(
    usage: ChargeUsage, mapping: UsageMapping | None, rate_card: Mapping[str, RateCardEntry]
) -> dict[str, Any]:
    """The platform's credit price of the usage (rate card), when the usage is mapped."""
    if mapping is None:
        return {
            "x_LedgerResourceType": None,
            "x_LedgerQuantity": None,
            "x_LedgerUnit": None,
            "x_CreditsListUnitPrice": None,
            "x_CreditsListCost": None,
        }
    entry = rate_card[mapping.resource_type]
    qty = to_ledger_quantity(
        dict(rate_card), mapping.resource_type, usage.consumed_quantity, usage.consumed_unit
    )
    return {
        "x_LedgerResourceType": mapping.resource_type,
        "x_LedgerQuantity": qty.quantize(_QUANTUM),
        "x_LedgerUnit": entry.ledger_unit,
        "x_CreditsListUnitPrice": entry.credits_per_unit,
        "x_CreditsListCost": (qty * entry.credits_per_unit).quantize(_QUANTUM),
    }


def _costs(usage: ChargeUsage) -> dict[str, Any]:
    """FOCUS costs. Known only from the provider's reported cost; it reports what it charged at
    its pay-as-you-go rate with no commitment or negotiated discount we could know of, so list,
    contracted, effective and billed cost are that one amount."""
    if not usage.cost_known:
        return dict.fromkeys(
            (
                "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice",
                "ContractedUnitPrice", "PricingCategory",
            ),
            None,
        ) | {"BillingCurrency": usage.billing_currency, "x_CostStatus": COST_UNKNOWN}  # fmt: skip
    cost = usage.billed_cost
    price = _unit_price(cost, usage.consumed_quantity)
    return {
        "BilledCost": cost,
        "EffectiveCost": cost,
        "ListCost": cost,
        "ContractedCost": cost,
        "ListUnitPrice": price,
        "ContractedUnitPrice": price,
        "PricingCategory": "Standard",
        "BillingCurrency": usage.billing_currency,
        "x_CostStatus": COST_REPORTED,
    }


def _description(usage: ChargeUsage, prof: ProviderProfile) -> str:
    what = usage.resource_name or usage.resource_id
    qty = format(usage.consumed_quantity.normalize(), "f")  # 60, not 60.000000000000
    return f"{prof.service_name} {usage.metric}: {qty} {usage.consumed_unit} ({what})"


def focus_row(
    usage: ChargeUsage,
    mappings: Sequence[UsageMapping] | MappingResolver,
    rate_card: Mapping[str, RateCardEntry],
) -> dict[str, Any]:
    """One FOCUS row (FOCUS names, then ``x_`` columns) for one charge. Raises
    ``MappingError`` when the rate card cannot convert a mapped usage's unit. ``mappings``: the
    rules, or a resolver to reuse over many charges."""
    prof = profile(usage.provider)
    resolve = mappings if isinstance(mappings, MappingResolver) else MappingResolver(mappings)
    mapping = resolve(usage.provider, usage.resource_id, usage.metric, usage.sub_account_id)
    period_start, period_end = billing_period(usage.charge_period_start)
    return {
        "usage_date": usage.usage_date,
        **_costs(usage),
        "BillingAccountId": usage.billing_account_id,
        "BillingAccountName": None,
        "BillingPeriodStart": period_start,
        "BillingPeriodEnd": period_end,
        "ChargePeriodStart": as_utc(usage.charge_period_start),
        "ChargePeriodEnd": as_utc(usage.charge_period_end),
        "ChargeCategory": USAGE,
        "ChargeClass": None,  # not a correction
        "ChargeDescription": _description(usage, prof),
        "ChargeFrequency": "Usage-Based",
        "PricingQuantity": usage.consumed_quantity,
        "PricingUnit": usage.consumed_unit,
        "ConsumedQuantity": usage.raw_quantity,
        "ConsumedUnit": usage.raw_unit,
        "ProviderName": prof.provider_name,
        "PublisherName": prof.publisher_name,
        "InvoiceIssuerName": prof.invoice_issuer_name,
        "ServiceName": prof.service_name,
        "ServiceCategory": prof.category(usage.metric),
        "ResourceId": usage.resource_id,
        "ResourceName": usage.resource_name,
        "ResourceType": prof.resource_type,
        # the provider's own name of what it charges for; the price id adds the unit it prices in
        "SkuId": f"{usage.provider}:{usage.metric}",
        "SkuPriceId": f"{usage.provider}:{usage.metric}:{usage.consumed_unit}",
        "RegionId": None,
        "RegionName": None,
        "AvailabilityZone": None,
        "SubAccountId": usage.sub_account_id,
        "SubAccountName": None,
        "Tags": None,
        **dict.fromkeys(COMMITMENT_COLUMNS),  # no commitment discounts
        "x_Provider": usage.provider,
        "x_Metric": usage.metric,
        "x_EntityId": mapping.entity_id if mapping else None,
        "x_EntityType": mapping.entity_type if mapping else None,
        **_credits(usage, mapping, rate_card),
        "x_SourceRows": usage.rows,
    }


COMMITMENT_COLUMNS = (
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
)

# Column order of the export, with each column's kind (Parquet types; CSV text forms).
ColumnKind = Literal["decimal", "string", "datetime", "integer"]
FOCUS_COLUMNS: dict[str, ColumnKind] = {
    "AvailabilityZone": "string",
    "BilledCost": "decimal",
    "BillingAccountId": "string",
    "BillingAccountName": "string",
    "BillingCurrency": "string",
    "BillingPeriodEnd": "datetime",
    "BillingPeriodStart": "datetime",
    "ChargeCategory": "string",
    "ChargeClass": "string",
    "ChargeDescription": "string",
    "ChargeFrequency": "string",
    "ChargePeriodEnd": "datetime",
    "ChargePeriodStart": "datetime",
    **dict.fromkeys(COMMITMENT_COLUMNS, "string"),
    "ConsumedQuantity": "decimal",
    "ConsumedUnit": "string",
    "ContractedCost": "decimal",
    "ContractedUnitPrice": "decimal",
    "EffectiveCost": "decimal",
    "InvoiceIssuerName": "string",
    "ListCost": "decimal",
    "ListUnitPrice": "decimal",
    "PricingCategory": "string",
    "PricingQuantity": "decimal",
    "PricingUnit": "string",
    "ProviderName": "string",
    "PublisherName": "string",
    "RegionId": "string",
    "RegionName": "string",
    "ResourceId": "string",
    "ResourceName": "string",
    "ResourceType": "string",
    "ServiceCategory": "string",
    "ServiceName": "string",
    "SkuId": "string",
    "SkuPriceId": "string",
    "SubAccountId": "string",
    "SubAccountName": "string",
    "Tags": "string",
}
CUSTOM_COLUMNS: dict[str, ColumnKind] = {
    "x_Provider": "string",
    "x_Metric": "string",
    "x_EntityId": "string",
    "x_EntityType": "string",
    "x_LedgerResourceType": "string",
    "x_LedgerQuantity": "decimal",
    "x_LedgerUnit": "string",
    "x_CreditsListUnitPrice": "decimal",
    "x_CreditsListCost": "decimal",
    "x_CostStatus": "string",
    "x_SourceRows": "integer",
}
# focus-validator 1.0.0 checks five columns under their pre-1.0 names (FOCUS 0.5: Provider,
# Publisher, InvoiceIssuer, ResourceID, ChargeType). The export carries them as copies of the
# 1.0 columns so that the spec's own tool runs every rule; a FOCUS 1.0 reader ignores them.
VALIDATOR_ALIASES: dict[str, str] = {
    "Provider": "ProviderName",
    "Publisher": "PublisherName",
    "InvoiceIssuer": "InvoiceIssuerName",
    "ResourceID": "ResourceId",
    "ChargeType": "ChargeCategory",
}


def export_columns() -> dict[str, ColumnKind]:
    """Every column of the export file, in order: FOCUS, the validator's aliases, ``x_``."""
    aliases = {a: FOCUS_COLUMNS[c] for a, c in VALIDATOR_ALIASES.items()}
    return {**FOCUS_COLUMNS, **aliases, **CUSTOM_COLUMNS}


def export_sources() -> dict[str, str]:
    """Every column of the export file, in order, and the stored column it is read from (an
    alias: its 1.0 column)."""
    return {name: VALIDATOR_ALIASES.get(name, name) for name in export_columns()}


def export_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored FOCUS row as an export record (aliases filled in, nothing else added)."""
    return {name: row.get(source) for name, source in export_sources().items()}


def exportable(row: Mapping[str, Any]) -> bool:
    """FOCUS 1.0 requires BilledCost, EffectiveCost, ListCost and ContractedCost: a row whose
    provider cost is unknown cannot be written without inventing one."""
    return row.get("x_CostStatus") == COST_REPORTED


class DayFigures:
    """One day's FOCUS figures, accumulated as its rows stream past (the rows themselves are not
    kept, only counts, exact sums and the first ``preview`` rows, cut to ``columns`` when given:
    a year of full preview rows would cost tens of MB)."""

    def __init__(self, preview: int = 20, columns: Sequence[str] | None = None) -> None:
        self.rows = 0
        self.rows_exportable = 0
        self.by_provider: Counter[str] = Counter()
        self.unknown_by_provider: Counter[str] = Counter()
        self.billed_cost = Decimal(0)
        self.credits_list_cost = Decimal(0)
        self.preview: list[dict[str, Any]] = []
        self._preview_limit = preview
        self._columns = list(columns) if columns is not None else None

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        self.by_provider[row["x_Provider"]] += 1
        if exportable(row):
            self.rows_exportable += 1
        if row["x_CostStatus"] == COST_UNKNOWN:
            self.unknown_by_provider[row["x_Provider"]] += 1
        if row["BilledCost"] is not None:
            self.billed_cost += row["BilledCost"]
        if row["x_CreditsListCost"] is not None:
            self.credits_list_cost += row["x_CreditsListCost"]
        if len(self.preview) < self._preview_limit:
            cols = self._columns
            self.preview.append(dict(row) if cols is None else {c: row.get(c) for c in cols})
