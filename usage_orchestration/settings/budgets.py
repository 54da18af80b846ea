"""Budget, forecast and anomaly settings."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ProviderCap(BaseModel):
    """A provider-side monthly allowance (e.g. Forge's free 100,000 GB-seconds of function
    compute), tracked with a forecast like a budget."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    metric: str
    unit: str
    monthly_quantity: Decimal = Field(gt=0)
    description: str = ""


class BudgetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds_pct: list[Decimal] = Field(
        default_factory=lambda: [Decimal(50), Decimal(80), Decimal(100)],
        description="Percent of the monthly budget at which a threshold counts as crossed.",
    )
    provider_caps: list[ProviderCap] = Field(
        default_factory=lambda: [
            ProviderCap(
                provider="forge",
                metric="FUNCTION_COMPUTE",
                unit="GB-seconds",
                monthly_quantity=Decimal(100_000),
                description="Forge free allowance: 100,000 GB-seconds of function duration a month",
            )
        ]
    )
    forecast_min_days: int = Field(3, ge=1, le=28, description="days of data before forecasting")

    @field_validator("thresholds_pct")
    @classmethod
    def _sorted_positive(cls, v: list[Decimal]) -> list[Decimal]:
        if any(t <= 0 for t in v):
            raise ValueError("thresholds must be positive percentages")
        return sorted(set(v))
