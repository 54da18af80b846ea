"""Mapping of provider usage to ledger entities, and the rate card per ledger resource type."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Provider = Literal["phala", "neon", "forge"]


class UsageMapping(BaseModel):
    """Provider usage matching (provider, resource_id, metric) belongs to this ledger entity.

    ``resource_id``/``metric``/``sub_account_id`` left empty match anything; the most specific
    matching rule wins. Usage matched by no rule is reported as ``unmapped``, never dropped.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    provider: Provider
    resource_id: str | None = None
    metric: str | None = None
    sub_account_id: str | None = None
    entity_id: str = Field(min_length=1)
    entity_type: str = Field(min_length=1)
    resource_type: str = Field(min_length=1)

    @property
    def specificity(self) -> int:
        return sum(x is not None for x in (self.resource_id, self.metric, self.sub_account_id))

    def matches(
        self, provider: str, resource_id: str, metric: str, sub_account_id: str | None
    ) -> bool:
        return (
            self.provider == provider
            and self.resource_id in (None, resource_id)
            and self.metric in (None, metric)
            and self.sub_account_id in (None, sub_account_id)
        )


class UnitConversion(BaseModel):
    """ledger quantity = provider quantity × multiply ÷ divide (kept as two factors so that
    e.g. byte-hours → average bytes per day is exactly ÷ 24)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    multiply: Decimal = Field(Decimal(1), gt=0)
    divide: Decimal = Field(Decimal(1), gt=0)

    def apply(self, quantity: Decimal) -> Decimal:
        return quantity * self.multiply / self.divide


class RateCardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ledger_unit: str = Field(min_length=1, description="unit of the ledger's raw quantity")
    conversions: dict[str, UnitConversion] = Field(
        description="provider unit → conversion into ledger_unit", min_length=1
    )
    credits_per_unit: Decimal = Field(ge=0, description="credits per ledger unit")
    tolerance_abs: Decimal = Field(Decimal(0), ge=0, description="in ledger units")
    tolerance_rel: Decimal = Field(Decimal("0.01"), ge=0, le=1, description="fraction of expected")
    block_downstream: bool = Field(
        False,
        description="a break of this resource type fails the blocking reconciliation check, "
        "which stops the assets downstream of usage_reconciliation in the same run",
    )

    @model_validator(mode="after")
    def _units_named(self) -> RateCardEntry:
        for unit, conv in self.conversions.items():
            if not unit.strip():
                raise ValueError("conversions: a provider unit name is empty")
            if unit == self.ledger_unit and (conv.multiply != conv.divide):
                raise ValueError(
                    f"conversions[{unit!r}]: the ledger unit itself must convert 1:1 "
                    f"(got ×{conv.multiply} ÷{conv.divide})"
                )
        return self
