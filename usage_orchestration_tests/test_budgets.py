"""Budget, forecast, pool, provider-cap and anomaly rules (pure), with hand-computed figures."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D

from usage_orchestration.core.budgets import (
    anomalies,
    budget_status,
    credit_pool_status,
    provider_cap_status,
    run_rate_forecast,
)
from usage_orchestration.ledger.base import CreditPool, EntityBudget


def daily(entity: str, first: date, days: int, credits: str, rt: str = "app_compute") -> list:
    return [(first + timedelta(days=i), entity, "app", rt, D(credits)) for i in range(days)]


def by_entity(rows) -> dict:
    return {r.entity_id: r for r in rows}


MARCH = date(2026, 3, 1)


def test_month_to_date_percent_remaining_thresholds_and_forecast() -> None:
    credits = (
        daily("a", MARCH, 10, "30") + daily("b", MARCH, 10, "60") + daily("c", MARCH, 10, "120")
    )
    budgets = [
        EntityBudget(entity_id="a", entity_type="app", name="A", monthly_budget=D(1000)),
        EntityBudget(entity_id="b", entity_type="app", name="B", monthly_budget=D(1000)),
        EntityBudget(entity_id="c", entity_type="app", name="C", monthly_budget=D(1000)),
    ]
    rows = by_entity(budget_status(date(2026, 3, 10), credits, budgets))
    a, b, c = rows["a"], rows["b"], rows["c"]
    # a: 300 used of 1000 = 30 %, nothing crossed; 300 / 10 days × 31 = 930, under budget
    assert (a.credits_used, a.budget_percent, a.budget_remaining) == (D(300), D(30), D(700))
    assert a.highest_threshold_crossed is None and a.thresholds_crossed == ""
    assert (
        a.forecast_month_end == D(930)
        and a.forecast_overrun is None
        and a.forecast_percent == D(93)
    )
    # b: 600 = 60 %, crossed 50; forecast 1860 → overrun 860 (186 %)
    assert (
        b.budget_percent == D(60)
        and b.highest_threshold_crossed == D(50)
        and b.thresholds_crossed == "50"
    )
    assert (
        b.forecast_month_end == D(1860)
        and b.forecast_overrun == D(860)
        and b.forecast_percent == D(186)
    )
    assert not b.over_budget
    # c: 1200 = 120 %: over budget, every threshold crossed, remaining -200
    assert c.over_budget and c.budget_remaining == D(-200) and c.thresholds_crossed == "50,80,100"
    assert c.highest_threshold_crossed == D(100)
    assert (a.days_of_data, a.days_elapsed, a.days_in_month, a.month) == (10, 10, 31, "2026-03")


def test_entities_without_budget_and_budgets_without_usage() -> None:
    credits = daily("nobudget", MARCH, 4, "10")
    budgets = [
        EntityBudget(entity_id="idle", entity_type="app", name="Idle", monthly_budget=D(500))
    ]
    rows = by_entity(budget_status(date(2026, 3, 4), credits, budgets))
    nb, idle = rows["nobudget"], rows["idle"]
    assert nb.monthly_budget is None and nb.budget_percent is None and nb.budget_remaining is None
    assert not nb.over_budget and nb.highest_threshold_crossed is None
    assert nb.forecast_month_end == D(310) and nb.forecast_overrun is None  # 40 / 4 × 31
    assert idle.credits_used == 0 and idle.budget_percent == 0 and idle.budget_remaining == D(500)
    assert idle.forecast_month_end == 0 and idle.entity_name == "Idle"


def test_zero_budget_with_spend_is_over_and_crosses_everything() -> None:
    rows = budget_status(
        date(2026, 3, 1),
        daily("z", MARCH, 1, "1"),
        [EntityBudget(entity_id="z", entity_type="app", monthly_budget=D(0))],
    )
    assert (
        rows[0].over_budget
        and rows[0].budget_percent is None
        and rows[0].thresholds_crossed == "50,80,100"
    )


def test_forecast_waits_for_three_days_of_data() -> None:
    b = [EntityBudget(entity_id="a", entity_type="app", monthly_budget=D(100))]
    assert (
        budget_status(date(2026, 3, 2), daily("a", MARCH, 2, "10"), b)[0].forecast_month_end is None
    )
    # day 10 of the month but the ledger holds only two days of data: still no forecast
    two_days = daily("a", MARCH, 1, "10") + daily("a", date(2026, 3, 9), 1, "10")
    assert budget_status(date(2026, 3, 10), two_days, b)[0].forecast_month_end is None
    three = budget_status(date(2026, 3, 3), daily("a", MARCH, 3, "10"), b)[0]
    assert three.forecast_month_end == D(310) and three.forecast_overrun == D(210)


def test_month_boundary_counts_only_the_month_of_the_day() -> None:
    credits = daily("a", date(2026, 2, 20), 9, "100") + daily(
        "a", MARCH, 1, "7"
    )  # Feb 20..28, Mar 1
    b = [EntityBudget(entity_id="a", entity_type="app", monthly_budget=D(70))]
    r = budget_status(MARCH, credits, b)[0]
    assert (
        r.credits_used == D(7)
        and r.budget_percent == D(10)
        and r.days_of_data == 1
        and r.days_elapsed == 1
    )
    feb = budget_status(date(2026, 2, 28), credits, b)[0]
    assert feb.credits_used == D(900) and feb.month == "2026-02" and feb.days_in_month == 28
    assert feb.forecast_month_end == D(900)  # 900 / 28 × 28 on the last day


def test_leap_years() -> None:
    b: list[EntityBudget] = []
    # 100 credits over Feb 1..10: 100 / 10 × 29 = 290 in 2028 (leap), × 28 = 280 in 2027
    assert budget_status(date(2028, 2, 10), daily("a", date(2028, 2, 1), 10, "10"), b)[
        0
    ].forecast_month_end == D(290)
    assert budget_status(date(2027, 2, 10), daily("a", date(2027, 2, 1), 10, "10"), b)[
        0
    ].forecast_month_end == D(280)
    leap_day = budget_status(date(2028, 2, 29), daily("a", date(2028, 2, 1), 29, "1"), b)[0]
    assert (
        leap_day.days_in_month == 29
        and leap_day.credits_used == D(29)
        and leap_day.forecast_month_end == D(29)
    )
    assert run_rate_forecast(D(10), date(2028, 3, 1), 5, 3) == D(310)


def test_history_is_stable_later_rows_never_count() -> None:
    b = [EntityBudget(entity_id="a", entity_type="app", monthly_budget=D(1000))]
    early = daily("a", MARCH, 5, "10")
    later = early + daily("a", date(2026, 3, 6), 20, "500")
    assert budget_status(date(2026, 3, 5), early, b) == budget_status(date(2026, 3, 5), later, b)


def test_empty_day_keeps_month_to_date() -> None:
    # data on Mar 1..3 only; as of Mar 6 (nothing since): used 30, 3 data days, forecast 30 / 6 × 31 = 155
    r = budget_status(date(2026, 3, 6), daily("a", MARCH, 3, "10"), [])[0]
    assert r.credits_used == D(30) and r.days_of_data == 3 and r.forecast_month_end == D(155)
    assert budget_status(date(2026, 3, 6), [], []) == []


def test_credit_pool_run_rate_and_depletion_date() -> None:
    credits = daily("a", MARCH, 10, "400")
    p = credit_pool_status(
        date(2026, 3, 10), CreditPool(included=D(10000), used=D(4000), remaining=D(6000)), credits
    )
    # 4000 / 10 = 400 a day; 6000 left lasts 15 more days → depleted at the end of Mar 25
    assert (
        p.daily_run_rate == D(400)
        and p.forecast_month_end_used == D(12400)
        and p.forecast_remaining == D(-2400)
    )
    assert (
        p.projected_depletion_date == date(2026, 3, 25)
        and not p.depleted
        and p.percent_used == D(40)
    )
    slow = credit_pool_status(
        date(2026, 3, 10), CreditPool(included=D(10000), used=D(1000), remaining=D(9000)), credits
    )
    assert slow.projected_depletion_date is None and slow.forecast_remaining == D(
        6900
    )  # 100/day: lasts the month
    early = credit_pool_status(
        date(2026, 3, 2), CreditPool(included=D(100), used=D(80), remaining=D(20)), credits
    )
    assert early.daily_run_rate is None and early.projected_depletion_date is None  # 2 days of data


def test_credit_pool_already_depleted_names_the_day() -> None:
    credits = daily("a", MARCH, 6, "300")  # cumulative 300, 600, 900, 1200: reaches 1000 on Mar 4
    p = credit_pool_status(
        date(2026, 3, 6), CreditPool(included=D(1000), used=D(1800), remaining=D(-800)), credits
    )
    assert (
        p.depleted and p.projected_depletion_date == date(2026, 3, 4) and p.percent_used == D(180)
    )


def test_provider_cap_with_forecast_and_exhaustion() -> None:
    q = {MARCH + timedelta(days=i): D(5000) for i in range(10)}
    r = provider_cap_status(
        date(2026, 3, 10),
        provider="forge",
        metric="FUNCTION_COMPUTE",
        unit="GB-seconds",
        cap=D(100000),
        daily_quantity=q,
        covered_days=q.keys(),
    )
    # 50,000 of 100,000 GB-s = 50 %; 5,000 a day × 31 = 155,000 → 55,000 over; runs out end of Mar 20
    assert (r.used_quantity, r.percent_used, r.remaining_quantity) == (D(50000), D(50), D(50000))
    assert r.forecast_month_end == D(155000) and r.forecast_overage == D(55000)
    assert r.projected_exhaustion_date == date(2026, 3, 20) and not r.over_cap and r.reason is None


def test_provider_cap_with_coverage_holes_and_other_units() -> None:
    q = {MARCH + timedelta(days=i): D(1000) for i in range(8)}
    r = provider_cap_status(
        date(2026, 3, 10),
        provider="forge",
        metric="FUNCTION_COMPUTE",
        unit="GB-seconds",
        cap=D(100000),
        daily_quantity=q,
        covered_days=q.keys(),
        other_units=["MB-seconds"],
    )
    # 8,000 over 8 covered days = 1,000 a day → 31,000 forecast, no overage, no exhaustion this month
    assert r.days_of_data == 8 and r.forecast_month_end == D(31000) and r.forecast_overage is None
    assert r.projected_exhaustion_date is None
    assert "2 day(s)" in (r.reason or "") and "MB-seconds" in (r.reason or "")


def test_anomaly_spike_drop_new_and_thresholds() -> None:
    d = date(2026, 3, 20)
    base = daily("a", d - timedelta(days=14), 14, "100") + daily(
        "b", d - timedelta(days=14), 14, "100"
    )
    base += daily("tiny", d - timedelta(days=14), 14, "2")
    today = [
        (d, "a", "app", "app_compute", D(200)),
        (d, "tiny", "app", "app_compute", D(10)),
        (d, "new", "app", "app_compute", D(50)),
    ]  # b: nothing today
    rows = {(r.entity_id, r.resource_type): r for r in anomalies(d, base + today)}
    a, b, tiny, new = (
        rows[("a", "app_compute")],
        rows[("b", "app_compute")],
        rows[("tiny", "app_compute")],
        rows[("new", "app_compute")],
    )
    assert (
        a.is_anomaly
        and a.direction == "spike"
        and a.impact_credits == D(100)
        and a.impact_pct == D(100)
    )
    assert a.baseline_credits == D(100) and a.baseline_days == 14
    assert (
        b.is_anomaly
        and b.direction == "drop"
        and b.impact_credits == D(-100)
        and b.impact_pct == D(-100)
    )
    assert not tiny.is_anomaly and tiny.impact_pct == D(400)  # +400 % but only 8 credits < 10
    assert new.is_anomaly and new.impact_pct is None and new.baseline_credits == 0


def test_anomaly_below_threshold_and_baseline_days() -> None:
    d = date(2026, 3, 20)
    base = daily("a", d - timedelta(days=14), 14, "100")
    assert not anomalies(d, base + [(d, "a", "app", "app_compute", D(190))])[
        0
    ].is_anomaly  # +90 % < 100 %
    assert anomalies(d, base + [(d, "a", "app", "app_compute", D(140))], threshold_pct=D(40))[
        0
    ].is_anomaly
    # only 6 data days in the window: not judged
    assert (
        anomalies(d, daily("a", d - timedelta(days=6), 6, "100") + [(d, "a", "app", "x", D(900))])
        == []
    )
    # the day itself has no ledger data: not judged (no evidence of zero use)
    assert anomalies(d, base) == []
    # a window day without any ledger data is left out of the mean: 13 days of 100 → baseline 100
    gap = [c for c in base if c[0] != d - timedelta(days=3)]
    r = anomalies(d, gap + [(d, "a", "app", "app_compute", D(100))])[0]
    assert r.baseline_days == 13 and r.baseline_credits == D(100) and not r.is_anomaly
    # rows after the day never count
    later = base + [
        (d, "a", "app", "app_compute", D(100)),
        (d + timedelta(days=1), "a", "app", "app_compute", D(9999)),
    ]
    assert anomalies(d, later) == anomalies(d, later[:-1])


def test_budget_state_says_configured_no_budget_or_not_configured() -> None:
    day = date(2026, 3, 5)
    credits = [(day, "a", "app", "app_compute", D(10)), (day, "new", "app", "app_compute", D(5))]
    with_budgets = budget_status(
        day, credits, [EntityBudget(entity_id="a", entity_type="app", monthly_budget=D(100))]
    )
    assert {r.entity_id: r.budget_state for r in with_budgets} == {
        "a": "configured",
        "new": "no_budget",  # the month has budgets, not for this entity
    }
    # no budget at all for the month: every entity not_configured, never over budget
    bare = budget_status(day, credits, [])
    assert {r.entity_id: r.budget_state for r in bare} == {
        "a": "not_configured",
        "new": "not_configured",
    }
    assert not any(r.over_budget or r.thresholds_crossed for r in bare)
    assert [r.credits_used for r in bare] == [D(10), D(5)]
