"""What a provider charged for: the fields one usage row and one summed charge share.

Known here once: ``providers.records.UsageRow`` (a fetched row) adds its idempotency key and
details, ``core.focus.ChargeUsage`` (rows summed per charge) adds how many rows it sums.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class Charge(BaseModel):
    """One (provider, account, resource, metric, charge period, group) with its quantities."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str  # FOCUS ServiceProviderName, lower-case slug: phala | neon | forge
    billing_account_id: str  # Phala team, Neon org, Forge developer account/app owner
    resource_id: str  # Phala app id, Neon project id, Forge app id
    resource_name: str | None = None
    sub_account_id: str | None = None  # Forge environment/site ARI, Phala instance
    metric: str  # provider-native: Phala usage_type, Neon metric_name, Forge resource
    charge_period_start: datetime  # UTC, inclusive (naive when read back: stored as UTC)
    charge_period_end: datetime  # UTC, exclusive
    usage_date: date  # the partition
    consumed_quantity: Decimal  # in consumed_unit (billing unit)
    consumed_unit: str
    raw_quantity: Decimal  # as the provider reported it
    raw_unit: str
    billed_cost: Decimal | None = None  # when the provider reports cost (Phala); a charge: the sum
    billing_currency: str | None = None
