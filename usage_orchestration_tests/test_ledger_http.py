"""The HTTP ledger reader against the sandbox's Usage Reporting API: the same figures as SQL
(credits only), the shared retry policy, clear errors, no token leaks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, delete

from usage_orchestration.ledger.base import SyncStatus
from usage_orchestration.ledger.factory import make_ledger_reader, sync_problem
from usage_orchestration.ledger.http import HttpLedger
from usage_orchestration.ledger.schema import credit_pool
from usage_orchestration.ledger.sql import CreditPoolNotConfigured, SqlLedger
from usage_orchestration.providers.http import ProviderError, ProviderResponseError, RetryPolicy
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.sandbox.demo_ledger import SUPPORT_BOT, seed_demo_ledger
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import load_settings

DAYS = [date(2026, 5, 1) + timedelta(days=i) for i in range(12)]
TOKEN = Sandbox.API_KEYS["ledger"]


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    settings = load_settings(state_dir=str(tmp_path / "state"))
    seed_demo_ledger(url, settings, DAYS, seed=7, sync_failure="lm_unavailable")
    return url


@pytest.fixture
def sb(seeded: str) -> Sandbox:
    return Sandbox(seed=7, now=datetime(2026, 5, 12, 15, tzinfo=UTC), ledger_url=seeded)


def _http(sb: Sandbox, token: str = TOKEN) -> HttpLedger:
    return HttpLedger(
        "http://sandbox.test/ledger",
        token,
        transport=sb.transport(),
        retry=RetryPolicy(max_attempts=3, jitter=False),
        sleep=lambda s: None,
    )


def test_http_reader_matches_sql_on_credits(sb: Sandbox, seeded: str) -> None:
    http, sql = _http(sb), SqlLedger(seeded)
    for day in (DAYS[0], DAYS[5], DAYS[-1]):
        h, s = http.daily_usage(day), sql.daily_usage(day)
        assert [(u.entity_id, u.resource_type, u.credits, u.events) for u in h] == [
            (u.entity_id, u.resource_type, u.credits, u.events) for u in s
        ]
        assert all(u.quantity is None and u.unit is None for u in h)  # the API has no quantities
    assert http.credits_by_day(DAYS[2], DAYS[4]) == sql.credits_by_day(DAYS[2], DAYS[4])
    assert http.budgets("2026-05") == sql.budgets("2026-05")
    assert http.credit_pool(DAYS[6]) == sql.credit_pool(DAYS[6])
    assert http.resource_types() == sql.resource_types()
    assert http.sync_status() == sql.sync_status()
    # the API's own view of the overrun
    body = (
        httpx.Client(transport=sb.transport())
        .get("http://x/ledger/api/usage", headers={"Authorization": f"Bearer {TOKEN}"})
        .json()
    )
    over = {b["entityId"] for b in body["budgets"] if b["isOverBudget"]}
    assert over == {SUPPORT_BOT}
    assert body["sync"]["lastSyncFailureCode"] == "lm_unavailable"


def test_retries_5xx_and_honours_the_policy(sb: Sandbox) -> None:
    sb.add_fault("ledger", Fault(status=503, count=2, headers={"Retry-After": "1"}))
    http = _http(sb)
    assert http.daily_usage(DAYS[3])
    assert http.http.stats.retries == 2
    sb.add_fault("ledger", Fault(status=503, count=5))
    with pytest.raises(ProviderError, match="gave up after 3 attempts") as err:
        http.daily_usage(DAYS[3])
    assert "window 2026-05-04" in str(err.value)


def test_bad_token_and_bad_bodies_are_clear_errors(sb: Sandbox) -> None:
    wrong = "not-the-token-123"
    with pytest.raises(ProviderError) as err:
        _http(sb, wrong).daily_usage(DAYS[0])
    assert err.value.status == 401 and wrong not in str(err.value)
    sb.add_fault("ledger", Fault(malformed='{"usageSummary": [{"entityId": 1}]}'))
    with pytest.raises(ProviderResponseError, match="usageSummary.0"):
        _http(sb).daily_usage(DAYS[0])
    # A 200 whose body is not JSON is transient (retried like a 5xx): once, the retry answers;
    # on every attempt, the call fails naming it.
    sb.add_fault("ledger", Fault(malformed="<html>"))
    assert _http(sb).daily_usage(DAYS[0]) == _http(sb).daily_usage(DAYS[0])
    sb.add_fault("ledger", Fault(malformed="<html>", count=3))
    with pytest.raises(ProviderError, match="not JSON"):
        _http(sb).daily_usage(DAYS[0])
    with pytest.raises(ProviderError) as err:
        _http(sb).usage(DAYS[3], DAYS[1])
    assert err.value.status == 400 and "endDate" in str(err.value)


def test_factory_over_loopback_and_sync_signal(sb: Sandbox, tmp_path: Path) -> None:
    server = SandboxServer(sb).start()
    try:
        settings = load_settings(
            state_dir=str(tmp_path / "state"),
            ledger={"backend": "http", "api_base_url": server.url + "/ledger"},
        )
        with pytest.raises(ValueError, match="LEDGER_API_TOKEN"):
            make_ledger_reader(settings)
        reader = make_ledger_reader(settings, TOKEN)
        assert isinstance(reader, HttpLedger)
        assert sum((u.credits for u in reader.daily_usage(DAYS[1])), Decimal(0)) > 0
        problem = sync_problem(reader.sync_status())
        assert problem is not None and "lm_unavailable" in problem
    finally:
        server.stop()
    assert isinstance(make_ledger_reader(load_settings(state_dir=str(tmp_path / "s"))), SqlLedger)


def test_api_without_ledger_database_answers_503() -> None:
    http = HttpLedger(
        "http://x/ledger",
        TOKEN,
        transport=Sandbox(seed=7).transport(),
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(ProviderError) as err:
        http.resource_types()
    assert err.value.status == 503


def test_sync_problem_reads_the_sync_block() -> None:
    t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    assert sync_problem(SyncStatus(synced_at=t0)) is None
    assert "never synced" in (sync_problem(SyncStatus()) or "")
    failed = sync_problem(
        SyncStatus(
            synced_at=t0,
            last_sync_failed_at=t0 + timedelta(hours=1),
            last_sync_failure_code="license_not_recognized",
        )
    )
    assert failed is not None and "license_not_recognized" in failed and t0.isoformat() in failed
    # a good sync after the failure: over
    assert (
        sync_problem(
            SyncStatus(
                synced_at=t0 + timedelta(hours=2),
                last_sync_failed_at=t0 + timedelta(hours=1),
                last_sync_failure_code="lm_error",
            )
        )
        is None
    )
    assert "staleness level critical" in (
        sync_problem(SyncStatus(synced_at=t0, staleness_level="critical")) or ""
    )


def test_a_month_without_a_pool_reads_as_not_configured_over_http(sb: Sandbox, seeded: str) -> None:
    """The API documents ``creditPool`` on every answer; a month the ledger holds no pool for
    comes back null, and both readers say "not configured" (budget_status's reading), never a
    zero pool that would read as depleted."""
    with create_engine(seeded).begin() as conn:
        conn.execute(delete(credit_pool))
    body = (
        httpx.Client(transport=sb.transport())
        .get("http://x/ledger/api/usage", headers={"Authorization": f"Bearer {TOKEN}"})
        .json()
    )
    assert "creditPool" in body and body["creditPool"] is None
    for reader in (_http(sb), SqlLedger(seeded)):
        with pytest.raises(CreditPoolNotConfigured, match="2026-05"):
            reader.credit_pool(DAYS[4])


def test_an_answer_without_the_credit_pool_block_is_an_error_not_a_missing_pool() -> None:
    body = {"usageSummary": [], "dailyTotals": [], "budgets": [], "sync": {}}
    http = HttpLedger(
        "http://ledger.test",
        TOKEN,
        transport=httpx.MockTransport(lambda req: httpx.Response(200, json=body)),
        retry=RetryPolicy(max_attempts=1, jitter=False),
        sleep=lambda s: None,
    )
    with pytest.raises(ProviderResponseError, match="creditPool") as info:
        http.credit_pool(DAYS[0])
    assert not isinstance(info.value, CreditPoolNotConfigured)


def test_a_surprise_in_one_block_does_not_fail_the_other_reads() -> None:
    """Each block of /api/usage is read by its own method: an untyped stalenessLevel, a null
    monthlyBudget or a null creditPool.remaining (none typed by the document) must not fail the
    daily usage behind reconciliation, and each is read for what it says."""
    body = {
        "usageSummary": [
            {
                "entityId": "e1",
                "entityType": "app",
                "resourceType": "app_compute",
                "totalCredits": 12.5,
                "totalEvents": 3,
            }
        ],
        "budgets": [
            {
                "entityId": "e1",
                "entityType": "app",
                "monthlyBudget": None,
                "creditsUsed": 12.5,
                "isOverBudget": False,
            },
            {
                "entityId": "e2",
                "entityType": "app",
                "monthlyBudget": 100,
                "creditsUsed": 0,
                "isOverBudget": False,
            },
        ],
        "creditPool": {"included": 50000, "used": 12340, "remaining": None},
        "sync": {"syncedAt": "2026-05-04T10:00:00Z", "stalenessLevel": 2},
    }
    http = HttpLedger(
        "http://ledger.test",
        TOKEN,
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body)),
        sleep=lambda s: None,
    )
    [usage] = http.daily_usage(DAYS[3])
    assert (usage.entity_id, usage.credits, usage.events) == ("e1", Decimal("12.5"), 3)
    assert [b.entity_id for b in http.budgets("2026-05")] == ["e2"]  # e1 has no budget
    pool = http.credit_pool(DAYS[3])
    assert (pool.used, pool.remaining) == (Decimal(12340), Decimal(37660))
    assert http.sync_status().staleness_level == "2"
    # a block that is wrong is still an error, naming the field, for the method that reads it
    body["usageSummary"][0]["totalCredits"] = "lots"
    with pytest.raises(ProviderResponseError, match="usageSummary.0"):
        http.daily_usage(DAYS[3])
    assert http.sync_status().staleness_level == "2"
