"""The shared HTTP policy: what is retried, how long it waits, what an error says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from usage_orchestration.providers.http import (
    KEEP_DECODED_MAX_BYTES,
    PageGuard,
    ProviderError,
    ProviderHttp,
    ProviderResponseError,
    RetryPolicy,
    SharedRateBudget,
    body_json,
    parse_retry_after,
)


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(30.0)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


class Script:
    """A transport answering a scripted sequence of responses (or exceptions)."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        return step


def _http(script: Script, sleeps: list[float], attempts: int = 4, **kw: object) -> ProviderHttp:
    return ProviderHttp(
        "acme",
        "http://acme.test",
        transport=httpx.MockTransport(script),
        retry=RetryPolicy(
            max_attempts=attempts, base_delay_s=1.0, retry_after_cap_s=10.0, jitter=False
        ),
        sleep=sleeps.append,
        **kw,  # type: ignore[arg-type]
    )


def test_429_honours_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow down"}),
        httpx.Response(200, json={"ok": True}),
    )
    r = _http(script, sleeps).request("GET", "/x", account="acct-1")
    assert r.json() == {"ok": True}
    assert sleeps == [3.0]


def test_retry_after_beyond_the_cap_is_handed_to_the_caller_without_sleeping() -> None:
    """A wait longer than a step should sleep in-process becomes a retryable error carrying the
    provider's wait (the asset turns it into a Dagster step retry with that wait)."""
    sleeps: list[float] = []
    script = Script(
        httpx.Response(503, headers={"Retry-After": "3600"}), httpx.Response(200, json={})
    )
    with pytest.raises(ProviderError) as exc:
        _http(script, sleeps).request("GET", "/x", account="acct-1")
    assert exc.value.retryable and exc.value.retry_after_s == 3600.0
    assert script.calls == 1 and sleeps == []
    assert "3600" in str(exc.value) and "acct-1" in str(exc.value)
    # within the cap it is honoured in-process
    script = Script(
        httpx.Response(503, headers={"Retry-After": "10"}), httpx.Response(200, json={})
    )
    _http(script, sleeps).request("GET", "/x")
    assert sleeps == [10.0]


def test_gives_up_without_sleeping_after_last_attempt() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(503, json={"message": "down"}))
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps, attempts=3).request(
            "GET", "/x", account="acct-1", window="2026-11-01"
        )
    assert script.calls == 3
    assert sleeps == [1.0, 2.0]  # exponential backoff, nothing after the third attempt
    e = err.value
    assert e.retryable and e.status == 503
    assert "acme" in str(e) and "acct-1" in str(e) and "2026-11-01" in str(e) and "down" in str(e)


def test_connection_errors_and_timeouts_are_retried() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"ok": 1}),
    )
    assert _http(script, sleeps).request("GET", "/x").json() == {"ok": 1}
    assert len(sleeps) == 2


class CountingBudget:
    def __init__(self) -> None:
        self.taken = 0

    def acquire(self) -> float:
        self.taken += 1
        return 0.0


def test_a_truncated_or_garbled_2xx_body_is_retried_like_a_5xx_and_counts_in_the_budget() -> None:
    sleeps: list[float] = []
    budget = CountingBudget()
    script = Script(
        httpx.Response(200, content=b'{"usage": [{"cost": 1.5'),  # cut mid-body
        httpx.Response(200, content=b"\x00\xffgarbage<html>"),  # not JSON, not even UTF-8
        httpx.Response(200, content=b""),  # empty
        httpx.Response(200, json={"usage": []}),
    )
    response = _http(script, sleeps, attempts=4, budget=budget).request("GET", "/x")
    assert response.json() == {"usage": []}
    assert script.calls == 4 and budget.taken == 4 and len(sleeps) == 3


def test_a_large_body_is_checked_the_same_way_without_keeping_its_decoded_tree() -> None:
    # over KEEP_DECODED_MAX_BYTES (a Phala page) the check parses and drops the tree: a cut or
    # garbled large body is still retried, a whole one returned, and body_json decodes it anew
    big = json.dumps({"usage": [{"billing_key": f"k{i}", "cost": 1.5} for i in range(30_000)]})
    assert len(big) > KEEP_DECODED_MAX_BYTES
    sleeps: list[float] = []
    budget = CountingBudget()
    script = Script(
        httpx.Response(200, content=big[: len(big) // 2].encode()),  # cut mid-body
        httpx.Response(200, content=big.encode() + b"<html>"),  # garbled tail
        httpx.Response(200, content=big.encode()),
    )
    response = _http(script, sleeps, attempts=3, budget=budget).request("GET", "/x")
    assert script.calls == 3 and budget.taken == 3 and len(sleeps) == 2
    assert body_json(response)["usage"][-1] == {"billing_key": "k29999", "cost": 1.5}


def test_bad_bodies_until_the_last_attempt_fail_as_retryable_naming_the_body() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(200, content=b'{"projects": ['))
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps, attempts=3).request("GET", "/x", account="org-1", window="w")
    assert script.calls == 3 and len(sleeps) == 2
    assert err.value.retryable and err.value.status == 200
    assert "truncated or not JSON" in str(err.value) and "org-1" in str(err.value)


def test_a_body_that_parses_is_final_even_when_it_breaks_the_schema() -> None:
    # schema checks belong to the client's parser, which fails without retrying
    sleeps: list[float] = []
    script = Script(httpx.Response(200, json={"unexpected": True}))
    assert _http(script, sleeps).request("GET", "/x").json() == {"unexpected": True}
    assert script.calls == 1 and sleeps == []


def test_client_errors_are_not_retried_and_name_the_context() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(404, json={"detail": "App not found"}))
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps).request(
            "GET", "/apps/x/usage", account="app x", window="2026-11-01..2026-11-02"
        )
    assert script.calls == 1 and sleeps == []
    msg = str(err.value)
    assert (
        "HTTP 404" in msg
        and "App not found" in msg
        and "app x" in msg
        and "GET /apps/x/usage" in msg
    )


def test_secrets_are_redacted_from_errors() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(401, json={"message": "bad key sk-SECRET-123"}))
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps, secrets=["sk-SECRET-123"]).request("GET", "/x")
    assert "sk-SECRET-123" not in str(err.value)
    assert "***" in str(err.value)


def test_inband_errors_are_retried_or_raised() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.Response(200, json={"error": 429}), httpx.Response(200, json={"error": 400})
    )

    def inband(resp: httpx.Response) -> tuple[bool, str] | None:
        code = resp.json().get("error")
        return None if code is None else (code == 429, f"in-band {code}")

    with pytest.raises(ProviderError, match="in-band 400") as err:
        _http(script, sleeps).request("POST", "/graphql", inband_error=inband)
    assert not err.value.retryable
    assert script.calls == 2 and len(sleeps) == 1


def test_a_retryable_inband_error_honours_retry_after_under_the_same_cap() -> None:
    def inband(resp: httpx.Response) -> tuple[bool, str] | None:
        return (True, "in-band 429") if resp.json().get("error") else None

    limited = {"error": 429}
    sleeps: list[float] = []
    script = Script(
        httpx.Response(200, headers={"Retry-After": "3"}, json=limited),
        httpx.Response(200, json={}),
    )
    _http(script, sleeps).request("POST", "/graphql", inband_error=inband)
    assert sleeps == [3.0] and script.calls == 2
    # beyond the cap (10 s here): handed to the caller with the wait, nothing slept
    script = Script(httpx.Response(200, headers={"Retry-After": "3600"}, json=limited))
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps).request("POST", "/graphql", inband_error=inband, account="acct-1")
    assert err.value.retryable and err.value.retry_after_s == 3600.0
    assert script.calls == 1 and sleeps == [3.0]
    assert "in-band 429" in str(err.value) and "acct-1" in str(err.value)


def test_page_guard_rejects_repeats_and_caps_pages() -> None:
    guard = PageGuard("neon", 3, account="org-1", window="w")
    guard.visit("a")
    with pytest.raises(ProviderResponseError, match="repeated"):
        guard.visit("a")
    guard.visit("b")
    guard.visit("c")
    with pytest.raises(ProviderResponseError, match="more than 3 pages"):
        guard.visit("d")


def test_shared_budget_waits_for_the_window(tmp_path: Path) -> None:
    clock = [1000.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    path = tmp_path / "budget.json"
    a = SharedRateBudget(path, 3, 10.0, clock=lambda: clock[0], sleep=sleep)
    b = SharedRateBudget(path, 3, 10.0, clock=lambda: clock[0], sleep=sleep)  # another process
    for budget in (a, b, a):
        assert budget.acquire() == 0.0
        clock[0] += 1.0
    waited = b.acquire()  # the 4th request in 10 s must wait until the first leaves the window
    assert waited == pytest.approx(7.0)
    assert clock[0] == pytest.approx(1010.0)


def test_a_redirect_is_a_final_error_naming_where_it_points_never_an_empty_2xx() -> None:
    """A login page or a moved endpoint answers 302: not followed (the credential would go
    along), not retried, and said as it is; the Location's query (a token?) is not shown."""
    sleeps: list[float] = []
    script = Script(
        httpx.Response(302, headers={"Location": "https://sso.test/login?token=abc123"})
    )
    with pytest.raises(ProviderError) as err:
        _http(script, sleeps).request("GET", "/api/usage", window="2026-11-01")
    assert script.calls == 1 and sleeps == []
    msg = str(err.value)
    assert "HTTP 302 redirect to https://sso.test/login" in msg and "abc123" not in msg
    assert "empty body" not in msg and not err.value.retryable
