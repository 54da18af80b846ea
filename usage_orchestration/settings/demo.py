"""Builders of the demo data set's mappings and rate card entries: defaults.py, neon.py and
forge.py write their provider's part of the demo with them, one line per entry.

The demo ledger allows one tolerance per ledger unit, so the unit picks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from usage_orchestration.settings.mapping import (
    Provider,
    RateCardEntry,
    UnitConversion,
    UsageMapping,
)

# ledger unit → (tolerance_abs in that unit, tolerance_rel)
DEMO_TOLERANCES: dict[str, tuple[Decimal, Decimal]] = {
    "second": (Decimal(60), Decimal("0.02")),
    "minute": (Decimal(60), Decimal("0.02")),
    "byte": (Decimal(1_000_000), Decimal("0.01")),
    "branch-month": (Decimal("0.001"), Decimal("0.01")),
}


def demo_mappings(
    provider: Provider,
    entity_type: str,
    owners: Mapping[str, str],
    resource_types: Mapping[str, str],
) -> list[UsageMapping]:
    """Every metric of every resource, charged to the resource's owner: ``owners`` maps a
    resource id to its ledger entity, ``resource_types`` a metric to its resource type."""
    return [
        UsageMapping(
            provider=provider,
            resource_id=resource_id,
            metric=metric,
            entity_id=entity_id,
            entity_type=entity_type,
            resource_type=resource_type,
        )
        for resource_id, entity_id in owners.items()
        for metric, resource_type in resource_types.items()
    ]


def demo_rate(
    ledger_unit: str, unit: str, credits_per_unit: str, *, multiply: int = 1, divide: int = 1
) -> RateCardEntry:
    """``credits_per_unit`` per ledger unit, the provider's ``unit`` converting into it as
    × ``multiply`` ÷ ``divide``, within the demo tolerance of ``ledger_unit``."""
    tolerance_abs, tolerance_rel = DEMO_TOLERANCES[ledger_unit]
    return RateCardEntry(
        ledger_unit=ledger_unit,
        conversions={unit: UnitConversion(multiply=Decimal(multiply), divide=Decimal(divide))},
        credits_per_unit=Decimal(credits_per_unit),
        tolerance_abs=tolerance_abs,
        tolerance_rel=tolerance_rel,
    )
