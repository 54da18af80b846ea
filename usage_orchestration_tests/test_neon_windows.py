"""Neon lookback windows (relative to the provider's clock), range fetches and the shared
request budget."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from usage_orchestration.providers.http import RetryPolicy
from usage_orchestration.providers.neon import NeonClient, Windows, client_from_settings
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.settings import load_settings

NOW = datetime(2026, 5, 20, 9, 30, tzinfo=UTC)
KEY = Sandbox.API_KEYS["neon"]


def make_client(sb: Sandbox, **kw: object) -> NeonClient:
    opts: dict[str, object] = {
        "metrics": ["compute_unit_seconds", "root_branch_bytes_month"],
        "transport": sb.transport(),
        "now": sb.now,
        "retry": RetryPolicy(max_attempts=2, jitter=False),
        "sleep": lambda _s: None,
    }
    opts.update(kw)
    return NeonClient("http://sandbox/neon", KEY, "org-sandbox-1", **opts)  # type: ignore[arg-type]


def test_window_edges_follow_the_provider_clock() -> None:
    w = Windows.at(NOW)
    # now - 60 days = 2026-03-21T09:30: the 21st is partly outside, the 22nd is the first full day
    assert w.daily_earliest == date(2026, 3, 22)
    assert w.is_daily(date(2026, 3, 22)) and w.is_daily(NOW.date())
    assert not w.is_daily(date(2026, 3, 21)) and not w.is_daily(NOW.date() + timedelta(days=1))
    assert Windows.at(NOW, margin_s=15 * 3600).daily_earliest == date(
        2026, 3, 23
    )  # narrower, never wider
    assert Windows.at(datetime(2026, 5, 20, tzinfo=UTC)).daily_earliest == date(2026, 3, 21)
    assert w.monthly_earliest == date(2025, 6, 1)


def test_days_outside_the_daily_window_are_unavailable_never_zero() -> None:
    sb = Sandbox(seed=7, now=NOW)
    days = [date(2026, 3, 18) + timedelta(days=i) for i in range(8)]  # 18th..25th
    with make_client(sb) as c:
        result = c.fetch_days(days)
    cov = {x.usage_date: x for x in result.coverage}
    assert [d for d in days if cov[d].status == "unavailable"] == [
        date(2026, 3, d) for d in (18, 19, 20, 21)
    ]
    reason = cov[date(2026, 3, 20)].reason or ""
    assert "provider_unavailable" in reason and "60 days" in reason and "2026-03-22" in reason
    assert {r.usage_date for r in result.rows} == {date(2026, 3, d) for d in (22, 23, 24, 25)}
    assert all(cov[d].row_count > 0 for d in days if cov[d].status == "complete")
    # the window moves with Neon's clock, not the client's
    sb.set_now(NOW + timedelta(days=4))
    with make_client(sb) as c:
        later = c.fetch_days(days)
    assert all(x.status == "unavailable" for x in later.coverage)
    assert later.rows == [] and later.requests == 0


def test_a_range_is_one_request_per_chunk_and_page_and_lands_per_day() -> None:
    sb = Sandbox(seed=7, now=NOW)
    sb.state["neon"] = {"projects": 3}
    days = [date(2026, 4, 1) + timedelta(days=i) for i in range(40)]
    with make_client(sb) as c:
        result = c.fetch_days(days)
    assert result.requests == 1 and len(sb.received("neon")) == 1
    assert {r.usage_date for r in result.rows} == set(days)
    for r in result.rows:
        assert r.charge_period_start.date() == r.usage_date
        assert r.charge_period_end - r.charge_period_start == timedelta(days=1)


def test_monthly_policy_records_whole_months_on_their_first_day() -> None:
    sb = Sandbox(seed=7, now=NOW)
    # Feb is wholly outside the daily window (earliest 2026-03-22); March is partly inside.
    days = [date(2026, 2, 1) + timedelta(days=i) for i in range(60)]  # Feb 1 .. Apr 1
    with make_client(sb) as c:
        result = c.fetch_days(days, outside_window="monthly")
    calls = [e["params"]["granularity"][0] for e in sb.received("neon")]
    assert sorted(calls) == ["daily", "monthly"]
    monthly = [r for r in result.rows if '"granularity": "monthly"' in (r.details or "")]
    assert monthly and {r.usage_date for r in monthly} == {date(2026, 2, 1)}
    assert all(r.charge_period_start == datetime(2026, 2, 1, tzinfo=UTC) for r in monthly)
    assert all(r.charge_period_end == datetime(2026, 3, 1, tzinfo=UTC) for r in monthly)
    cov = {x.usage_date: x for x in result.coverage}
    assert cov[date(2026, 2, 1)].status == "unavailable" and "recorded on this day" in (
        cov[date(2026, 2, 1)].reason or ""
    )
    assert cov[date(2026, 2, 1)].row_count == len(monthly)
    assert "recorded on 2026-02-01" in (cov[date(2026, 2, 10)].reason or "")
    assert "partly inside the daily window" in (cov[date(2026, 3, 10)].reason or "")
    # no day of March outside the window got rows (the monthly figure would double count)
    assert not [r for r in result.rows if date(2026, 3, 1) <= r.usage_date < date(2026, 3, 22)]
    # the month's figure equals the sum of its days
    from usage_orchestration.sandbox.neon import daily_metrics

    for pid in {r.resource_id for r in monthly}:
        expected = sum(
            daily_metrics(7, pid, date(2026, 2, 1) + timedelta(days=i)).get(
                "compute_unit_seconds", 0
            )
            for i in range(28)
        )
        got = sum(
            r.raw_quantity
            for r in monthly
            if r.resource_id == pid and r.metric == "compute_unit_seconds"
        )
        assert got == expected


def test_concurrent_clients_share_one_budget_and_never_provoke_429(tmp_path: Path) -> None:
    """Two clients (as two runs would) with the org's budget file under state_dir: the sandbox
    allows 5 requests/s per account; the budget of 4/s keeps both under it together."""
    sb = Sandbox(seed=7, now=NOW)
    sb.state["neon"] = {"projects": 1, "rate_limit": 5, "rate_window_s": 1.0}
    settings = load_settings(
        state_dir=str(tmp_path / "state"),
        neon={"rate_limit_requests": 4, "rate_limit_window_s": 1.0, "max_attempts": 1},
    )
    errors: list[BaseException] = []

    def run(first: date) -> None:
        try:
            with client_from_settings(
                settings.neon, KEY, settings.state_dir, now=sb.now, transport=sb.transport()
            ) as c:
                for i in range(6):
                    c.fetch_days([first + timedelta(days=i)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(date(2026, 4, 1 + 10 * k),)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sb.request_count("neon", 200) == 12 and sb.request_count("neon", 429) == 0
    assert (tmp_path / "state" / "neon-org-sandbox-1.rate.json").exists()


def test_without_the_budget_the_same_load_is_rate_limited() -> None:
    """The sandbox does enforce the limit (so the test above proves the budget works)."""
    sb = Sandbox(seed=7, now=NOW)
    sb.state["neon"] = {"projects": 1, "rate_limit": 5, "rate_window_s": 1.0}
    with make_client(sb, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(Exception, match="429"):
            for i in range(12):
                c.fetch_days([date(2026, 4, 1) + timedelta(days=i)])
    assert sb.request_count("neon", 429) == 1
