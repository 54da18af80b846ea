"""The default mapping and rate card: the sandbox's demo data set, one part per provider.

Real deployments replace both in the settings file.
"""

from __future__ import annotations

from decimal import Decimal

from usage_orchestration.settings import forge, neon
from usage_orchestration.settings.mapping import RateCardEntry, UnitConversion, UsageMapping

SALES_DASHBOARD = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
SUPPORT_BOT = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"

PHALA_APP_SALES = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
PHALA_APP_SUPPORT = "0fedcba9876543210fedcba9876543210fedcba9"


def _phala_app_compute(app_id: str, entity_id: str) -> UsageMapping:
    """A Phala app's compute, charged to a ledger app as ``app_compute``."""
    return UsageMapping(
        provider="phala",
        resource_id=app_id,
        metric="compute",
        entity_id=entity_id,
        entity_type="app",
        resource_type="app_compute",
    )


PHALA_MAPPINGS: list[UsageMapping] = [
    _phala_app_compute(PHALA_APP_SALES, SALES_DASHBOARD),
    _phala_app_compute(PHALA_APP_SUPPORT, SUPPORT_BOT),
    # Phala "storage" usage is deliberately left unmapped in the demo: it is reported as
    # `unmapped`, never dropped.
]

PHALA_RATE_CARD: dict[str, RateCardEntry] = {
    "app_compute": RateCardEntry(
        ledger_unit="second",
        conversions={"minute": UnitConversion(multiply=Decimal(60))},
        credits_per_unit=Decimal("0.01"),
        tolerance_abs=Decimal(60),
        tolerance_rel=Decimal("0.02"),
    ),
}


def _merge_rate_cards(*cards: dict[str, RateCardEntry]) -> dict[str, RateCardEntry]:
    """One entry per resource type; a provider adds its units' conversions to a shared type."""
    out: dict[str, RateCardEntry] = {}
    for card in cards:
        for slug, entry in card.items():
            if slug in out:
                base = out[slug]
                out[slug] = base.model_copy(
                    update={"conversions": {**base.conversions, **entry.conversions}}
                )
            else:
                out[slug] = entry
    return out


DEFAULT_MAPPINGS: list[UsageMapping] = (
    PHALA_MAPPINGS + neon.DEFAULT_MAPPINGS + forge.DEFAULT_MAPPINGS
)
DEFAULT_RATE_CARD: dict[str, RateCardEntry] = _merge_rate_cards(
    PHALA_RATE_CARD, neon.DEFAULT_RATE_CARD, forge.DEFAULT_RATE_CARD
)
