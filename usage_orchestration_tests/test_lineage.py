"""Honest lineage: the ledger is an external asset upstream of what reads it, and assets that
read trailing days declare it with time-window partition mappings."""

from __future__ import annotations

from dagster import AssetKey, AssetsDefinition, Definitions

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import load_settings

CREDIT_LEDGER = AssetKey("credit_ledger")
LEDGER_DAILY = AssetKey("ledger_daily_usage")


def _defs() -> Definitions:
    return build_definitions(load_settings())


def _assets(defs: Definitions) -> dict[AssetKey, AssetsDefinition]:
    return {k: a for a in defs.resolve_asset_graph().assets_defs for k in a.keys}


def _upstream_days(defs: Definitions, child: str, parent: AssetKey, day: str) -> list[str]:
    assets = _assets(defs)
    child_def = assets[AssetKey(child)]
    # the graph's mapping: the declared one, else Dagster's default (identity for days)
    mapping = defs.resolve_asset_graph().get_partition_mapping(AssetKey(child), parent)
    down = child_def.partitions_def
    up = assets[parent].partitions_def
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        down.empty_subset().with_partition_keys([day]), down, up
    )
    return sorted(result.partitions_subset.get_partition_keys())


def test_the_credit_ledger_is_an_external_asset_upstream_of_its_readers() -> None:
    defs = _defs()
    graph = defs.resolve_asset_graph()
    ledger = _assets(defs)[CREDIT_LEDGER]
    assert not ledger.is_materializable  # declared, never materialized here
    readers = {k.to_user_string() for k in graph.get(CREDIT_LEDGER).child_keys}
    assert readers == {"ledger_daily_usage", "budget_status", "usage_anomalies"}


def test_budgets_read_the_month_to_date() -> None:
    days = _upstream_days(_defs(), "budget_status", LEDGER_DAILY, "2026-03-31")
    assert days[0] == "2026-03-01" and days[-1] == "2026-03-31" and len(days) == 31


def test_anomalies_read_their_trailing_baseline() -> None:
    s = load_settings(budgets={"anomaly_baseline_days": 7, "anomaly_min_baseline_days": 3})
    days = _upstream_days(build_definitions(s), "usage_anomalies", LEDGER_DAILY, "2026-03-15")
    assert days == [f"2026-03-{d:02d}" for d in range(8, 16)]


def test_provider_caps_read_the_month_to_date_of_provider_usage() -> None:
    days = _upstream_days(_defs(), "provider_cap_status", AssetKey("forge_usage"), "2026-02-28")
    assert days[0] == "2026-01-29" and days[-1] == "2026-02-28"


def test_the_first_partition_has_no_missing_upstream() -> None:
    # before partitions_start there is nothing to read: not an error
    defs = _defs()
    assert _upstream_days(defs, "budget_status", LEDGER_DAILY, "2026-01-01") == ["2026-01-01"]


def test_reconciliation_reads_the_same_day() -> None:
    days = _upstream_days(_defs(), "usage_reconciliation", LEDGER_DAILY, "2026-03-15")
    assert days == ["2026-03-15"]
