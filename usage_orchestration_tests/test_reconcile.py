"""Reconciliation rules (pure): every status, tolerance, conversion, scope, credits-only ledgers.

Expectations are computed by hand in the comments. The rate card below: app_compute in seconds,
Phala reports minutes (× 60), 0.01 credits per second, tolerance max(60 s, 2 % of expected).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from usage_orchestration.core.reconcile import (
    CoverageAccount,
    CoverageEntry,
    ProviderAggregate,
    ReconcileConfig,
    ReconcileError,
    missing_accounts,
    reconcile_day,
    summarize,
)
from usage_orchestration.ledger.base import LedgerDailyUsage
from usage_orchestration.settings import SettingsError, load_settings
from usage_orchestration.settings.mapping import RateCardEntry, UnitConversion, UsageMapping

DAY = date(2026, 3, 10)
APP_A = "a" * 40
APP_B = "b" * 40
ENT_A = "ent-a"
ENT_B = "ent-b"
WS = "ws-1"

RATE_CARD = {
    "app_compute": RateCardEntry(
        ledger_unit="second",
        conversions={"minute": UnitConversion(multiply=D(60)), "GB-seconds": UnitConversion()},
        credits_per_unit=D("0.01"),
        tolerance_abs=D(60),
        tolerance_rel=D("0.02"),
    ),
    "workspace_storage": RateCardEntry(
        ledger_unit="byte",
        conversions={"byte-hours": UnitConversion(divide=D(24))},
        credits_per_unit=D("0.000001"),
        tolerance_abs=D(0),
        tolerance_rel=D("0.01"),
        block_downstream=True,
    ),
}
MAPPINGS = [
    UsageMapping(
        provider="phala",
        resource_id=APP_A,
        metric="compute",
        entity_id=ENT_A,
        entity_type="app",
        resource_type="app_compute",
    ),
    UsageMapping(
        provider="phala",
        resource_id=APP_B,
        metric="compute",
        entity_id=ENT_B,
        entity_type="app",
        resource_type="app_compute",
    ),
    UsageMapping(
        provider="forge",
        resource_id="forge-app",
        metric="FUNCTION_COMPUTE",
        entity_id=ENT_A,
        entity_type="app",
        resource_type="app_compute",
    ),
    UsageMapping(
        provider="neon",
        resource_id="proj-1",
        metric="root_branch_bytes_month",
        entity_id=WS,
        entity_type="workspace",
        resource_type="workspace_storage",
    ),
]
# Configured accounts as the provider registry defines them: Phala per app, Neon per
# organization (covers every project), Forge per (app, resource).
ACCOUNTS = {
    "phala": [CoverageAccount(APP_A, APP_A), CoverageAccount(APP_B, APP_B)],
    "neon": [CoverageAccount("org-1", None)],
    "forge": [CoverageAccount("forge-app|FUNCTION_COMPUTE", "forge-app")],
}
CONFIG = ReconcileConfig(
    mappings=MAPPINGS, rate_card=RATE_CARD, providers=["phala", "neon", "forge"], accounts=ACCOUNTS
)
ALL_COMPLETE = [
    CoverageEntry("phala", APP_A, "complete"),
    CoverageEntry("phala", APP_B, "complete"),
    CoverageEntry("neon", "org-1", "complete"),
    CoverageEntry("forge", "forge-app|FUNCTION_COMPUTE", "complete"),
]


def phala(
    app: str, minutes: str, metric: str = "compute", unit: str = "minute"
) -> ProviderAggregate:
    return ProviderAggregate(DAY, "phala", app, None, metric, unit, D(minutes), rows=3)


def ledger(
    entity: str, qty: str | None, credits: str, rt: str = "app_compute", unit: str | None = "second"
) -> LedgerDailyUsage:
    return LedgerDailyUsage(
        usage_date=DAY,
        entity_id=entity,
        entity_type="app",
        resource_type=rt,
        unit=unit if qty is not None else None,
        quantity=D(qty) if qty is not None else None,
        credits=D(credits),
        events=4,
    )


def one(rows, entity: str = ENT_A, rt: str = "app_compute"):
    found = [r for r in rows if r.entity_id == entity and r.resource_type == rt]
    assert len(found) == 1, rows
    return found[0]


def test_matched_within_relative_tolerance() -> None:
    # 100 min = 6000 s expected, 60 credits; ledger 6100 s: delta +100 ≤ max(60, 2 % × 6000 = 120)
    rows = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, "6100", "61")], ALL_COMPLETE, CONFIG
    )
    r = one(rows)
    assert r.status == "matched" and r.within_tolerance
    assert r.expected_quantity == D(6000) and r.expected_credits == D(60)
    assert r.delta_quantity == D(100) and r.delta_credits == D(1)
    assert r.delta_pct == D("1.6667")
    # ENT_A's compute is mapped from Phala and Forge: both feed (and must cover) the row
    assert r.compared_on == "quantity" and r.provider == "forge+phala"


def test_tolerance_boundary_is_inclusive() -> None:
    at = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, "6120", "61.2")], ALL_COMPLETE, CONFIG
    )
    past = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, "6120.5", "61.205")], ALL_COMPLETE, CONFIG
    )
    assert one(at).status == "matched"
    assert one(past).status == "ledger_over" and not one(past).within_tolerance


def test_absolute_tolerance_covers_small_volumes() -> None:
    # 1 min = 60 s expected; 2 % would be 1.2 s but the absolute 60 s wins: 100 s recorded (+40) matches
    rows = reconcile_day(
        DAY, [phala(APP_A, "1")], [ledger(ENT_A, "100", "1")], ALL_COMPLETE, CONFIG
    )
    assert one(rows).status == "matched"


def test_ledger_under_is_a_leak() -> None:
    # expected 6000 s / 60 credits, recorded 4200 s / 42 credits: 30 % under
    rows = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, "4200", "42")], ALL_COMPLETE, CONFIG
    )
    r = one(rows)
    assert r.status == "ledger_under" and not r.within_tolerance
    assert r.delta_quantity == D(-1800) and r.delta_credits == D(-18) and r.delta_pct == D(-30)
    s = summarize(rows)
    assert s.leak_credits == D(18) and s.overcharge_credits == 0 and s.breaks == 1


def test_ledger_over_is_an_overcharge() -> None:
    rows = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, "7000", "70")], ALL_COMPLETE, CONFIG
    )
    r = one(rows)
    assert r.status == "ledger_over" and r.delta_credits == D(10)
    assert summarize(rows).overcharge_credits == D(10)


def test_missing_in_ledger() -> None:
    # the ledger holds events that day (an AI charge of another entity), none for ENT_B
    ai = ledger(ENT_A, None, "5", rt="ai")
    rows = reconcile_day(DAY, [phala(APP_B, "50")], [ai], ALL_COMPLETE, CONFIG)
    r = one(rows, ENT_B)
    assert r.status == "missing_in_ledger" and not r.within_tolerance
    assert r.expected_credits == D(30) and r.recorded_credits is None and r.delta_credits == D(-30)
    assert summarize(rows).leak_credits == D(30)


def test_a_ledger_day_without_any_event_is_unavailable_not_a_wall_of_leaks() -> None:
    rows = reconcile_day(DAY, [phala(APP_A, "100"), phala(APP_B, "50")], [], ALL_COMPLETE, CONFIG)
    assert {(r.entity_id, r.status) for r in rows} == {
        (ENT_A, "ledger_unavailable"),
        (ENT_B, "ledger_unavailable"),
    }
    assert all(r.within_tolerance and r.delta_credits is None for r in rows)
    assert "no events at all" in (rows[0].reason or "")
    s = summarize(rows)
    assert s.breaks == 0 and s.leak_credits == 0 and s.counts["ledger_unavailable"] == 2


def test_a_ledger_answer_listing_entities_with_zero_events_is_still_unavailable() -> None:
    # a summary may list every entity, used or not: rows of 0 events are no event at all, the
    # same rule as the ledger asset's coverage (ledger_coverage), never leaks against them
    idle = [ledger(ENT_A, "0", "0").model_copy(update={"events": 0})]
    rows = reconcile_day(DAY, [phala(APP_A, "100"), phala(APP_B, "50")], idle, ALL_COMPLETE, CONFIG)
    assert {r.status for r in rows} == {"ledger_unavailable"}
    s = summarize(rows)
    assert s.breaks == 0 and s.leak_credits == 0


def test_missing_at_provider() -> None:
    # ledger charged ENT_B 12 credits; Phala (complete for the day) reports nothing for it
    rows = reconcile_day(DAY, [], [ledger(ENT_B, "1200", "12")], ALL_COMPLETE, CONFIG)
    r = one(rows, ENT_B)
    assert r.status == "missing_at_provider" and not r.within_tolerance
    assert r.expected_quantity is None and r.recorded_credits == D(12) and r.delta_credits == D(12)
    assert r.provider == "phala"
    assert summarize(rows).overcharge_credits == D(12)


def test_unmapped_usage_is_reported_never_dropped() -> None:
    rows = reconcile_day(
        DAY,
        [phala(APP_A, "30", metric="storage"), phala(APP_B, "20", metric="storage")],
        [],
        ALL_COMPLETE,
        CONFIG,
    )
    assert len(rows) == 1
    r = rows[0]
    assert r.status == "unmapped" and r.entity_id == "" and r.resource_type == "storage"
    assert r.expected_quantity == D(50) and r.ledger_unit == "minute" and r.provider_rows == 6
    assert APP_A in (r.reason or "") and r.within_tolerance
    assert summarize(rows).unmapped_rows == 6


def test_provider_unavailable_is_never_zero_usage() -> None:
    cov = [
        CoverageEntry("phala", APP_A, "unavailable", "outside window"),
        CoverageEntry("phala", APP_B, "complete"),
    ]
    rows = reconcile_day(DAY, [], [ledger(ENT_A, "6000", "60")], cov, CONFIG)
    r = one(rows)
    assert r.status == "provider_unavailable" and r.within_tolerance
    assert r.expected_quantity is None and r.recorded_credits == D(60) and r.delta_credits is None
    assert "outside window" in (r.reason or "")
    assert summarize(rows).breaks == 0


def test_no_coverage_at_all_means_unavailable_not_missing() -> None:
    rows = reconcile_day(DAY, [], [ledger(ENT_A, "6000", "60")], [], CONFIG)
    r = one(rows)
    assert r.status == "provider_unavailable" and "not fetched" in (r.reason or "")


def test_org_level_coverage_decides_for_projects() -> None:
    # Neon coverage is per organization; its projects are unavailable when the org is
    ws = LedgerDailyUsage(
        usage_date=DAY,
        entity_id=WS,
        entity_type="workspace",
        resource_type="workspace_storage",
        unit="byte",
        quantity=D(100),
        credits=D("0.0001"),
        events=1,
    )
    cov = [c for c in ALL_COMPLETE if c.provider != "neon"] + [
        CoverageEntry("neon", "org-1", "unavailable", "406")
    ]
    assert (
        one(reconcile_day(DAY, [], [ws], cov, CONFIG), WS, "workspace_storage").status
        == "provider_unavailable"
    )
    assert (
        one(reconcile_day(DAY, [], [ws], ALL_COMPLETE, CONFIG), WS, "workspace_storage").status
        == "missing_at_provider"
    )


def test_gauge_converted_the_same_way() -> None:
    # 2,400,000 byte-hours in a day = 100,000 bytes on average; ledger gauge 100,500 (+0.5 % ≤ 1 %)
    agg = ProviderAggregate(
        DAY, "neon", "proj-1", None, "root_branch_bytes_month", "byte-hours", D(2_400_000)
    )
    ws = LedgerDailyUsage(
        usage_date=DAY,
        entity_id=WS,
        entity_type="workspace",
        resource_type="workspace_storage",
        unit="byte",
        quantity=D(100_500),
        credits=D("0.1005"),
        events=24,
    )
    r = one(reconcile_day(DAY, [agg], [ws], ALL_COMPLETE, CONFIG), WS, "workspace_storage")
    assert r.expected_quantity == D(100_000) and r.status == "matched" and r.blocking
    ws_low = ws.model_copy(update={"quantity": D(90_000), "credits": D("0.09")})
    r = one(reconcile_day(DAY, [agg], [ws_low], ALL_COMPLETE, CONFIG), WS, "workspace_storage")
    assert r.status == "ledger_under" and r.blocking
    assert summarize([r]).blocking_breaks == 1


def test_credits_compared_when_the_ledger_has_no_quantities() -> None:
    # HTTP ledger: quantity unknown. Expected 60 credits; tolerance max(60 s × 0.01 = 0.6, 2 % × 60 = 1.2)
    ok = reconcile_day(
        DAY, [phala(APP_A, "100")], [ledger(ENT_A, None, "59")], ALL_COMPLETE, CONFIG
    )
    r = one(ok)
    assert r.status == "matched" and r.compared_on == "credits" and r.delta_quantity is None
    bad = one(
        reconcile_day(DAY, [phala(APP_A, "100")], [ledger(ENT_A, None, "50")], ALL_COMPLETE, CONFIG)
    )
    assert (
        bad.status == "ledger_under"
        and bad.delta_credits == D(-10)
        and bad.delta_pct == D("-16.6667")
    )


def test_several_providers_feeding_one_entity_are_summed() -> None:
    # Phala 10 min = 600 s plus Forge 400 GB-s (= 400 s at 1 GB) against 1000 s recorded
    aggs = [
        phala(APP_A, "10"),
        ProviderAggregate(
            DAY, "forge", "forge-app", "env", "FUNCTION_COMPUTE", "GB-seconds", D(400)
        ),
    ]
    r = one(reconcile_day(DAY, aggs, [ledger(ENT_A, "1000", "10")], ALL_COMPLETE, CONFIG))
    assert r.provider == "forge+phala" and r.expected_quantity == D(1000) and r.status == "matched"
    assert r.provider_rows == 4


def test_out_of_scope_ledger_types_and_disabled_providers_are_ignored() -> None:
    ai = ledger(ENT_A, "3", "300", rt="ai", unit="dollar")  # no provider bills AI credits
    ws = LedgerDailyUsage(
        usage_date=DAY,
        entity_id=WS,
        entity_type="workspace",
        resource_type="workspace_storage",
        unit="byte",
        quantity=D(100),
        credits=D(1),
        events=1,
    )
    phala_only = ReconcileConfig(
        mappings=MAPPINGS, rate_card=RATE_CARD, providers=["phala"], accounts=ACCOUNTS
    )
    neon_rows = [
        ProviderAggregate(
            DAY, "neon", "proj-1", None, "root_branch_bytes_month", "byte-hours", D(24)
        )
    ]
    assert reconcile_day(DAY, neon_rows, [ai, ws], ALL_COMPLETE, phala_only) == []


def test_other_days_are_ignored() -> None:
    other = ProviderAggregate(date(2026, 3, 11), "phala", APP_A, None, "compute", "minute", D(100))
    assert reconcile_day(DAY, [other], [], ALL_COMPLETE, CONFIG) == []


def test_unconvertible_units_name_provider_resource_day_and_field() -> None:
    with pytest.raises(ReconcileError) as exc:
        reconcile_day(DAY, [phala(APP_A, "1", unit="hour")], [], ALL_COMPLETE, CONFIG)
    msg = str(exc.value)
    assert (
        "phala" in msg
        and APP_A in msg
        and "2026-03-10" in msg
        and "consumed_unit" in msg
        and "'hour'" in msg
    )
    with pytest.raises(ReconcileError, match="ent-a app_compute on 2026-03-10: field unit 'kg'"):
        reconcile_day(DAY, [], [ledger(ENT_A, "1", "1", unit="kg")], ALL_COMPLETE, CONFIG)


def test_summary_counts_every_status_and_orders_worst_breaks() -> None:
    rows = reconcile_day(
        DAY,
        [phala(APP_A, "100"), phala(APP_B, "50"), phala(APP_A, "5", metric="storage")],
        [ledger(ENT_A, "4200", "42")],
        ALL_COMPLETE,
        CONFIG,
    )
    s = summarize(rows)
    assert (
        s.counts["ledger_under"] == 1
        and s.counts["missing_in_ledger"] == 1
        and s.counts["unmapped"] == 1
    )
    assert s.leak_credits == D(48)  # 18 under + 30 missing
    assert [r.entity_id for r in s.worst] == [ENT_B, ENT_A]  # 30 credits before 18
    assert s.days_with_breaks == [DAY]


def test_missing_accounts() -> None:
    expected = {k: v for k, v in ACCOUNTS.items() if k != "forge"}
    assert missing_accounts(expected, [CoverageEntry("phala", APP_A, "complete")]) == [
        f"phala:{APP_B}",
        "neon:org-1",
    ]
    # exact ids: an account whose id merely contains the configured one does not count
    assert missing_accounts(
        {"phala": [CoverageAccount(APP_A, APP_A)]},
        [CoverageEntry("phala", APP_A + "x", "complete")],
    ) == [f"phala:{APP_A}"]
    full = [
        CoverageEntry("phala", APP_A, "unavailable"),
        CoverageEntry("phala", APP_B, "complete"),
        CoverageEntry("neon", "org-1", "complete"),
    ]
    assert missing_accounts(expected, full) == []


def test_rate_card_and_budget_settings_are_validated_at_load() -> None:
    with pytest.raises(
        SettingsError, match="rate_card.app_compute.*ledger unit itself must convert 1:1"
    ):
        load_settings(
            rate_card={
                "app_compute": {
                    "ledger_unit": "second",
                    "conversions": {"second": {"multiply": 2}},
                    "credits_per_unit": 1,
                }
            }
        )
    with pytest.raises(SettingsError, match="rate_card.app_compute.tolerance_rel"):
        load_settings(
            rate_card={
                "app_compute": {
                    "ledger_unit": "second",
                    "conversions": {"minute": {"multiply": 60}},
                    "credits_per_unit": 1,
                    "tolerance_rel": 2,
                }
            }
        )
    with pytest.raises(SettingsError, match="anomaly_min_baseline_days"):
        load_settings(budgets={"anomaly_baseline_days": 5, "anomaly_min_baseline_days": 7})
    with pytest.raises(SettingsError, match="listed twice"):
        cap = {
            "provider": "forge",
            "metric": "FUNCTION_COMPUTE",
            "unit": "GB-seconds",
            "monthly_quantity": 1,
        }
        load_settings(budgets={"provider_caps": [cap, cap]})


def test_configured_account_without_coverage_is_unavailable() -> None:
    cfg = ReconcileConfig(
        mappings=MAPPINGS,
        rate_card=RATE_CARD,
        providers=["phala"],
        accounts={"phala": ACCOUNTS["phala"]},
    )
    cov = [CoverageEntry("phala", APP_A, "complete")]  # APP_B was not fetched today
    rows = reconcile_day(
        DAY,
        [phala(APP_A, "100")],
        [ledger(ENT_A, "6000", "60"), ledger(ENT_B, "600", "6")],
        cov,
        cfg,
    )
    assert one(rows).status == "matched"
    b = one(rows, ENT_B)
    assert b.status == "provider_unavailable" and APP_B in (b.reason or "") and not b.is_break
