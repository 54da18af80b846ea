"""Resolving provider usage to ledger entities and converting it with the rate card. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping


class MappingError(ValueError):
    """Usage cannot be converted: names provider unit and resource type."""


def resolve_mapping(
    mappings: Sequence[UsageMapping],
    provider: str,
    resource_id: str,
    metric: str,
    sub_account_id: str | None = None,
) -> UsageMapping | None:
    """The most specific rule matching the usage, or None (unmapped)."""
    best: UsageMapping | None = None
    for m in mappings:
        if m.matches(provider, resource_id, metric, sub_account_id) and (
            best is None or m.specificity > best.specificity
        ):
            best = m
    return best


class MappingResolver:
    """``resolve_mapping`` over one rule list, each distinct (provider, resource, metric,
    sub-account) resolved once: a year's load or FOCUS build maps ~60,000 charges of a few
    hundred such keys, against every rule each time."""

    def __init__(self, mappings: Sequence[UsageMapping]) -> None:
        self._mappings = mappings
        self._seen: dict[tuple[str, str, str, str | None], UsageMapping | None] = {}

    def __call__(
        self, provider: str, resource_id: str, metric: str, sub_account_id: str | None = None
    ) -> UsageMapping | None:
        key = (provider, resource_id, metric, sub_account_id)
        try:
            return self._seen[key]
        except KeyError:
            found = self._seen[key] = resolve_mapping(self._mappings, *key)
            return found


def to_ledger_quantity(
    rate_card: dict[str, RateCardEntry], resource_type: str, quantity: Decimal, unit: str
) -> Decimal:
    """``quantity`` in provider ``unit`` expressed in the resource type's ledger unit."""
    entry = rate_card.get(resource_type)
    if entry is None:
        raise MappingError(f"resource type {resource_type!r} has no rate_card entry")
    if unit == entry.ledger_unit:
        return quantity
    conversion = entry.conversions.get(unit)
    if conversion is None:
        raise MappingError(
            f"rate_card[{resource_type!r}] has no conversion from provider unit {unit!r} "
            f"to {entry.ledger_unit!r} (known: {sorted(entry.conversions)})"
        )
    return conversion.apply(quantity)
