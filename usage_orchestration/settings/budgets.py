"""Budget, forecast and anomaly settings."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from usage_orchestration.settings.fields import Count


class ProviderCap(BaseModel):
    """A provider-side monthly allowance (e.g. Forge's free 100,000 GB-seconds of function
    compute), tracked with a forecast like a budget."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    provider: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    monthly_quantity: Decimal = Field(gt=0)
    description: str = ""


class BudgetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    forecast_min_days: Count = Field(3, le=28, description="days of data before forecasting")
    anomaly_baseline_days: Count = Field(
        14, le=90, description="trailing days (before the day judged) forming the baseline"
    )
    anomaly_min_baseline_days: Count = Field(
        7, description="days of ledger data the baseline needs before anomalies are judged"
    )
    anomaly_threshold_pct: Decimal = Field(
        Decimal(100),
        gt=0,
        description="a day deviating from its baseline mean by at least this percent is an "
        "anomaly (100: doubled, or dropped to nothing)",
    )
    anomaly_min_credits: Decimal = Field(
        Decimal(10),
        ge=0,
        description="…and by at least this many credits (keeps tiny series from paging)",
    )
    worst_rows_shown: Count = Field(
        10, le=200, description="rows in the markdown tables of worst breaks/overruns"
    )
    late_data_days: Count = Field(
        3,
        le=31,
        description="days during which late provider data may still change a day: the "
        "late_data_refresh schedule re-materializes this many trailing days, and a month's "
        "statement stays provisional until month end + this many days",
    )

    @field_validator("thresholds_pct")
    @classmethod
    def _sorted_positive(cls, v: list[Decimal]) -> list[Decimal]:
        if any(t <= 0 for t in v):
            raise ValueError("thresholds must be positive percentages")
        return sorted(set(v))

    @field_validator("provider_caps")
    @classmethod
    def _unique_caps(cls, caps: list[ProviderCap]) -> list[ProviderCap]:
        seen: set[tuple[str, str, str]] = set()
        for i, c in enumerate(caps):
            key = (c.provider, c.metric, c.unit)
            if key in seen:
                raise ValueError(
                    f"provider_caps[{i}]: a cap for {c.provider} {c.metric} in {c.unit} is listed twice"
                )
            seen.add(key)
        return caps

    @model_validator(mode="after")
    def _baseline_fits(self) -> BudgetSettings:
        if self.anomaly_min_baseline_days > self.anomaly_baseline_days:
            raise ValueError(
                f"anomaly_min_baseline_days ({self.anomaly_min_baseline_days}) exceeds "
                f"anomaly_baseline_days ({self.anomaly_baseline_days})"
            )
        return self
