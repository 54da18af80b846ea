"""The Phala client against the sandbox: paging, pinned dates, de-duplication, errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from usage_orchestration.providers import phala
from usage_orchestration.providers.http import ProviderError, ProviderResponseError, RetryPolicy
from usage_orchestration.providers.phala import PhalaClient
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.sandbox.phala import phala_records

APP = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
KEY = Sandbox.API_KEYS["phala"]
D1, D3 = date(2026, 11, 1), date(2026, 11, 3)


class Recorder(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)


def _client(
    sandbox: Sandbox, page_size: int = 100, key: str = KEY, **kw: object
) -> tuple[PhalaClient, Recorder, list[float]]:
    rec = Recorder(sandbox.transport())
    sleeps: list[float] = []
    client = PhalaClient(
        "http://sandbox/phala",
        key,
        page_size=page_size,
        transport=rec,
        sleep=sleeps.append,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.5, jitter=False),
        **kw,  # type: ignore[arg-type]
    )
    return client, rec, sleeps


def _expected(seed: int, days: list[date]) -> list[dict]:
    return [r for d in days for r in phala_records(seed, APP, d)]


def test_pages_to_a_short_page_with_both_dates_pinned(sandbox: Sandbox) -> None:
    client, rec, _ = _client(sandbox, page_size=100)
    records = client.fetch_records(APP, D1, D3)
    expected = _expected(sandbox.seed, [D1, date(2026, 11, 2), D3])
    assert {r.billing_key for r in records} == {r["billing_key"] for r in expected}
    # the padded day before start is answered too (its records are dropped)
    padded = _expected(sandbox.seed, [D1 - timedelta(days=1)])
    assert len(rec.requests) == (len(padded) + len(expected)) // 100 + 1
    offsets = [int(r.url.params["offset"]) for r in rec.requests]
    assert offsets == [100 * i for i in range(len(rec.requests))]
    for r in rec.requests:  # the same pinned window on every page
        assert r.url.params["start_date"] == "2026-10-31T00:00:00Z"  # a day early
        assert r.url.params["end_date"] == "2026-11-04T00:00:00Z"
        assert r.url.params["limit"] == "100"
        assert r.headers["X-Phala-Version"] == "2026-01-21"


def test_duplicates_across_pages_are_dropped_on_billing_key(sandbox: Sandbox) -> None:
    sandbox.state["phala"] = {"duplicates": 9}
    client, _, _ = _client(sandbox, page_size=50)
    result = client.fetch_days([APP], [D1, D3])
    keys = [r.source_key for r in result.rows]
    assert len(keys) == len(set(keys))
    expected = _expected(sandbox.seed, [D1, D3])
    assert len(keys) == len(expected)


def test_a_full_page_is_handed_to_the_loader_in_slices(sandbox: Sandbox) -> None:
    """Memory: a 5,000-record page reaches the loader ``ROWS_PER_CHUNK`` rows at a time (its
    rows and their warehouse records never all exist at once), one request per page still, and
    every record exactly once."""
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(40)]
    expected = _expected(sandbox.seed, days)
    # one page (under the limit), which must need several slices
    assert 2 * phala.ROWS_PER_CHUNK < len(expected) < 5000
    client, rec, _ = _client(sandbox, page_size=5000)
    chunks = list(client.stream_days([APP], days))
    sizes = [len(c.rows) for c in chunks if c.rows]
    assert max(sizes) == phala.ROWS_PER_CHUNK
    assert len(sizes) == -(-len(expected) // phala.ROWS_PER_CHUNK)
    keys = [r.source_key for c in chunks for r in c.rows]
    assert sorted(keys) == sorted(r["billing_key"] for r in expected)
    assert len(rec.requests) == 1
    # the coverage comes once, after the app's last slice, counting every row of each day
    coverage = [cov for c in chunks for cov in c.coverage]
    assert [c.usage_date for c in coverage] == days
    assert sum(c.row_count for c in coverage) == len(expected)


def test_rows_are_normalized_with_decoded_details(sandbox: Sandbox) -> None:
    client, _, _ = _client(sandbox, page_size=500)
    result = client.fetch_days([APP], [D1])
    compute = [r for r in result.rows if r.metric == "compute"]
    assert compute and all(r.usage_date == D1 for r in result.rows)
    row = compute[0]
    assert row.consumed_unit == "minute" and row.billing_currency == "USD"
    assert isinstance(row.billed_cost, Decimal)
    assert json.loads(row.details or "{}")["vcpu"] in (2, 4)  # details decoded from its JSON string
    assert row.charge_period_end > row.charge_period_start
    total = sum(r.consumed_quantity for r in compute)
    assert total == sum(
        Decimal(str(x["duration_minutes"]))
        for x in phala_records(sandbox.seed, APP, D1)
        if x["usage_type"] == "compute"
    )
    cov = result.coverage
    assert [(c.usage_date, c.status) for c in cov] == [(D1, "complete")]
    assert cov[0].row_count == len(result.rows)


def test_429_with_retry_after_is_retried(sandbox: Sandbox) -> None:
    sandbox.add_fault("phala", Fault(status=429, count=2, headers={"Retry-After": "2"}))
    client, rec, sleeps = _client(sandbox, page_size=5000)
    assert client.fetch_records(APP, D1, D1)
    assert sleeps == [2.0, 2.0]
    assert len(rec.requests) == 3


def test_503_storm_gives_up_with_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.add_fault("phala", Fault(status=503, count=10))
    client, rec, sleeps = _client(sandbox)
    with pytest.raises(ProviderError) as err:
        client.fetch_records(APP, D1, D3)
    assert len(rec.requests) == 3 and len(sleeps) == 2  # no sleep after the last try
    msg = str(err.value)
    assert "phala" in msg and APP in msg and "2026-11-01..2026-11-03" in msg and "503" in msg


@pytest.mark.parametrize(
    ("key", "app", "status", "text"),
    [
        ("wrong-key", APP, 401, "Not authenticated"),
        (KEY, "f" * 40, 404, "App not found"),
    ],
)
def test_client_errors_are_not_retried(
    sandbox: Sandbox, key: str, app: str, status: int, text: str
) -> None:
    sandbox.state["phala"] = {"apps": [APP]}
    client, rec, sleeps = _client(sandbox, key=key)
    with pytest.raises(ProviderError) as err:
        client.fetch_records(app, D1, D1)
    assert err.value.status == status and text in str(err.value) and app in str(err.value)
    assert len(rec.requests) == 1 and sleeps == []
    assert "wrong-key" not in str(err.value)


def test_validation_error_detail_is_shown(sandbox: Sandbox) -> None:
    client, _, _ = _client(sandbox)
    client.page_size = 6000  # bypassing settings validation to provoke the API's 422
    with pytest.raises(ProviderError) as err:
        client.fetch_records(APP, D1, D1)
    assert err.value.status == 422 and "query.limit" in str(err.value)


def test_malformed_body_names_the_field(sandbox: Sandbox) -> None:
    bad = {
        "usage": [{**phala_records(sandbox.seed, APP, D1)[0], "billing_key": None}],
        "total": 1,
        "total_cost": 0,
    }
    sandbox.add_fault("phala", Fault(malformed=json.dumps(bad)))
    client, _, _ = _client(sandbox)
    with pytest.raises(ProviderResponseError) as err:
        client.fetch_records(APP, D1, D1)
    assert "billing_key" in str(err.value) and APP in str(err.value)


def test_details_that_are_not_json_are_an_error(sandbox: Sandbox) -> None:
    rec = {**phala_records(sandbox.seed, APP, D1)[0], "details": "{not json"}
    sandbox.add_fault(
        "phala", Fault(malformed=json.dumps({"usage": [rec], "total": 1, "total_cost": 0}))
    )
    client, _, _ = _client(sandbox)
    with pytest.raises(ProviderResponseError, match="details"):
        client.fetch_days([APP], [D1])


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="PHALA_API_KEY"):
        PhalaClient("http://x", "")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0.30000000000000004", Decimal("0.300000000000")),  # Float64 noise: 12 decimals
        ("0.1234567890125", Decimal("0.123456789012")),  # half-even, not half-up
        ("0.1", Decimal("0.1")),  # exact floats unchanged
        ("5", Decimal("5")),
        ("1e-13", Decimal("0E-12")),
    ],
)
def test_float_noise_beyond_the_storage_scale_is_rounded_half_even(
    sent: str, kept: Decimal
) -> None:
    rec = phala_records(7, APP, D1)[0]
    body = json.dumps({**rec, "cost": "@@"}).replace('"@@"', sent)
    parsed = phala.PhalaUsageRecord.model_validate_json(body)
    assert parsed.cost == kept and str(parsed.cost) == str(kept)


def test_integral_floats_are_integers_and_keep_their_text() -> None:
    rec = phala_records(7, APP, D1)[0]
    team, project = rec["team_id"], rec["project_id"]
    parsed = phala.PhalaUsageRecord.model_validate_json(
        json.dumps({**rec, "team_id": float(team), "project_id": float(project)})
    )
    assert (type(parsed.team_id), parsed.team_id, parsed.project_id) == (int, team, project)
    row = phala.normalize(parsed, APP, datetime.now(UTC))
    assert row.billing_account_id == str(team)  # "5001", never "5001.0"
    assert json.loads(row.details or "{}")["project_id"] == project
