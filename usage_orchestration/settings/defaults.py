"""The default mapping and rate card: the sandbox's demo data set, one part per provider.

Real deployments replace both in the settings file.
"""

from __future__ import annotations

from usage_orchestration.settings import forge, neon, phala
from usage_orchestration.settings.demo import demo_mappings, demo_rate
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping

SALES_DASHBOARD = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
SUPPORT_BOT = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"

PHALA_APP_SALES, PHALA_APP_SUPPORT = phala.DEMO_APP_IDS

# A Phala app's compute (app_compute) and its disk (app_storage, billed per minute) are charged
# to the same ledger app.
PHALA_MAPPINGS: list[UsageMapping] = demo_mappings(
    "phala",
    "app",
    {PHALA_APP_SALES: SALES_DASHBOARD, PHALA_APP_SUPPORT: SUPPORT_BOT},
    {"compute": "app_compute", "storage": "app_storage"},
)

PHALA_RATE_CARD: dict[str, RateCardEntry] = {
    "app_compute": demo_rate("second", "minute", "0.01", multiply=60),
    # the demo ledger charges a CVM's disk per minute it exists (the unit Phala bills)
    "app_storage": demo_rate("minute", "minute", "0.0001"),
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
] + neon.warehouse_mappings(MAPPED_NEON_PROJECTS, NEON_EXTRA_METRICS)
NEON_EXTRA_RATE_CARD: dict[str, RateCardEntry] = {
    # consumed unit GB (bytes / 1e9) → ledger bytes
    "data_transfer": demo_rate("byte", "GB", "0.000000001", multiply=1_000_000_000),
    # consumed unit branch-month (branch-hours / 744): charged as is
    "extra_branches": demo_rate("branch-month", "branch-month", "1.5"),
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
