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


def _phala_app_storage(app_id: str, entity_id: str) -> UsageMapping:
    """A Phala app's disk (billed per minute), charged to the same ledger app as
    ``app_storage``."""
    return UsageMapping(
        provider="phala",
        resource_id=app_id,
        metric="storage",
        entity_id=entity_id,
        entity_type="app",
        resource_type="app_storage",
    )


PHALA_MAPPINGS: list[UsageMapping] = [
    _phala_app_compute(PHALA_APP_SALES, SALES_DASHBOARD),
    _phala_app_compute(PHALA_APP_SUPPORT, SUPPORT_BOT),
    _phala_app_storage(PHALA_APP_SALES, SALES_DASHBOARD),
    _phala_app_storage(PHALA_APP_SUPPORT, SUPPORT_BOT),
]

PHALA_RATE_CARD: dict[str, RateCardEntry] = {
    "app_compute": RateCardEntry(
        ledger_unit="second",
        conversions={"minute": UnitConversion(multiply=Decimal(60))},
        credits_per_unit=Decimal("0.01"),
        tolerance_abs=Decimal(60),
        tolerance_rel=Decimal("0.02"),
    ),
    # the demo ledger charges a CVM's disk per minute it exists (the unit Phala bills)
    "app_storage": RateCardEntry(
        ledger_unit="minute",
        conversions={"minute": UnitConversion()},
        credits_per_unit=Decimal("0.0001"),
        tolerance_abs=Decimal(60),
        tolerance_rel=Decimal("0.02"),
    ),
}

# The one Neon project of the sandbox org that no ledger entity owns (a staff sandbox): kept
# deliberately unmapped so the demo shows what `unmapped` looks like (docs/reconciliation.md).
# Every other account the demo ingests is mapped.
UNMAPPED_NEON_PROJECT = neon.DEMO_PROJECTS[1]
MAPPED_NEON_PROJECTS = tuple(p for p in neon.DEMO_PROJECTS if p != UNMAPPED_NEON_PROJECT)

# Neon metrics beside compute and root-branch storage (settings/neon.py), for the mapped
# projects: every storage gauge is workspace storage, network transfer is data transfer,
# branches beyond the plan's allowance are extra branches.
NEON_EXTRA_METRICS = {
    "child_branch_bytes_month": "workspace_storage",
    "instant_restore_bytes_month": "workspace_storage",
    "snapshot_storage_bytes_month": "workspace_storage",
    "public_network_transfer_bytes": "data_transfer",
    "private_network_transfer_bytes": "data_transfer",
    "extra_branches_month": "extra_branches",
}
NEON_MAPPINGS: list[UsageMapping] = [
    m for m in neon.DEFAULT_MAPPINGS if m.resource_id in MAPPED_NEON_PROJECTS
] + [
    UsageMapping(
        provider="neon",
        resource_id=project,
        metric=metric,
        entity_id=neon.ANALYTICS_WAREHOUSE,
        entity_type="workspace",
        resource_type=resource_type,
    )
    for project in MAPPED_NEON_PROJECTS
    for metric, resource_type in NEON_EXTRA_METRICS.items()
]
NEON_EXTRA_RATE_CARD: dict[str, RateCardEntry] = {
    # consumed unit GB (bytes / 1e9) → ledger bytes
    "data_transfer": RateCardEntry(
        ledger_unit="byte",
        conversions={"GB": UnitConversion(multiply=Decimal(1_000_000_000))},
        credits_per_unit=Decimal("0.000000001"),
        tolerance_abs=Decimal(1_000_000),
        tolerance_rel=Decimal("0.01"),
    ),
    # consumed unit branch-month (branch-hours / 744): charged as is
    "extra_branches": RateCardEntry(
        ledger_unit="branch-month",
        conversions={"branch-month": UnitConversion()},
        credits_per_unit=Decimal("1.5"),
        tolerance_abs=Decimal("0.001"),
        tolerance_rel=Decimal("0.01"),
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


DEFAULT_MAPPINGS: list[UsageMapping] = PHALA_MAPPINGS + NEON_MAPPINGS + forge.DEFAULT_MAPPINGS
DEFAULT_RATE_CARD: dict[str, RateCardEntry] = _merge_rate_cards(
    PHALA_RATE_CARD, neon.DEFAULT_RATE_CARD, NEON_EXTRA_RATE_CARD, forge.DEFAULT_RATE_CARD
)
